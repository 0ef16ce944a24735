// Following a build's log: Server-Sent Events (`/log/events`, each event's id is the byte offset
// after it), falling back to polling the range read (`/log?offset=`) when SSE does not work.
// Output is rendered through the ANSI renderer (escaped first) and kept scrolled to the end while
// "follow" is on; scrolling up turns it off, scrolling back to the end turns it on again.

import { api, FINAL } from './util.js';
import { AnsiRenderer } from './ansi.js';

const TAIL = 2 * 1024 * 1024; // a longer log starts at its last 2 MiB (the raw link has all of it)

export function followLog(pre, buildId, { startAt = 0, follow, onStatus = () => {} }) {
  const ansi = new AnsiRenderer();
  const decoder = new TextDecoder('utf-8');
  let offset = startAt > TAIL ? startAt - TAIL : 0;
  let es = null;
  let timer = null;
  let closed = false;
  let failures = 0;
  let gotEvent = false;
  if (offset > 0) onStatus(`showing the last ${TAIL / 1024 / 1024} MiB; the raw log has all of it`);

  const atEnd = () => pre.scrollHeight - pre.scrollTop - pre.clientHeight < 24;
  pre.addEventListener('scroll', () => { follow.checked = atEnd(); });
  const append = (text) => {
    const markup = ansi.push(text);
    if (!markup) return;
    pre.insertAdjacentHTML('beforeend', markup);
    pre.classList.remove('empty');
    if (follow.checked) pre.scrollTop = pre.scrollHeight;
  };

  function sse() {
    es = new EventSource(`/api/v1/builds/${encodeURIComponent(buildId)}/log/events?offset=${offset}`);
    es.onopen = () => onStatus('following (live)');
    es.addEventListener('log', (ev) => {
      gotEvent = true;
      failures = 0;
      append(ev.data);
      const next = Number(ev.lastEventId);
      if (Number.isFinite(next) && next > 0) offset = next;
    });
    es.addEventListener('end', (ev) => {
      let state = '';
      try { state = JSON.parse(ev.data).state; } catch { /* keep '' */ }
      finish(state);
    });
    es.addEventListener('denied', (ev) => {  // the session's token was revoked: stop, do not retry
      let why = 'the session is no longer valid';
      try { why = JSON.parse(ev.data).error; } catch { /* keep the default */ }
      close();
      onStatus(why);
    });
    es.onerror = () => {
      if (closed) return;
      es.close();
      failures += 1;
      // Reconnect from where we are; after repeated failures (or if SSE never worked) poll instead.
      if (gotEvent && failures < 4) {
        onStatus('reconnecting…');
        timer = setTimeout(sse, 1000 * failures);
      } else {
        poll();
      }
    };
  }

  let emptyAfterEnd = 0;
  async function poll() {
    if (closed) return;
    onStatus('following (polling)');
    try {
      const res = await fetch(`/api/v1/builds/${encodeURIComponent(buildId)}/log?offset=${offset}&length=262144`,
        { credentials: 'same-origin' });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const buf = new Uint8Array(await res.arrayBuffer());
      if (buf.length) {
        offset += buf.length;
        append(decoder.decode(buf, { stream: true }));
        emptyAfterEnd = 0;
      } else {
        const b = await api(`/api/v1/builds/${encodeURIComponent(buildId)}`);
        // A final build's last lines may still be on their way for a moment.
        if (FINAL.has(b.state) && (emptyAfterEnd += 1) > 2) {
          finish(b.state);
          return;
        }
      }
    } catch (e) {
      onStatus(`log unavailable (${e.message}); retrying`);
    }
    if (!closed) timer = setTimeout(poll, 1000);
  }

  function finish(state) {
    close();
    onStatus(state ? `build ${state.replace('_', ' ')}; log complete` : 'log complete');
  }

  function close() {
    closed = true;
    clearTimeout(timer);
    if (es) es.close();
    append(decoder.decode());
  }

  sse();
  return { close };
}
