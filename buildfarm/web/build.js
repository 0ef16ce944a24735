// #/builds/ID: one build's spec, state history with reasons, live log, artifacts, cancel and rebuild.

import {
  api, html, raw, every, own, clock, ago, buildDuration, bytes, mem, stateBadge, where, buildUser, FINAL, setTitle,
  dateTime,
} from './util.js';
import { can, session } from './session.js';
import { followLog } from './log.js';

export function render(root, id) {
  setTitle(`Build ${id}`);
  const enc = encodeURIComponent(id);
  root.innerHTML = `${html`
    <div class="page-head build-head">
      <h1>Build <span class="mono">${id}</span> <span id="state"></span></h1>
      <div class="actions" id="actions">
        <button type="button" id="cancel" class="danger" hidden>Cancel</button>
        <button type="button" id="rebuild" hidden>Rebuild</button>
        <a id="resubmit" class="button" href="#/submit?from=${id}" hidden>Edit &amp; submit</a>
        <span class="muted" id="readonly" hidden>read-only: you are signed in as a ${session.role}</span>
      </div>
    </div>
    <p class="reason" id="reason"></p>
    <div class="banner error" id="build-error" hidden></div>
    <div class="grid2">
      <section><h2>Spec</h2><dl class="spec" id="spec"><dd class="muted">Loading…</dd></dl></section>
      <section><h2>History</h2>
        <table class="history"><thead><tr><th>State</th><th>At</th><th>Reason</th></tr></thead>
        <tbody id="history"></tbody></table>
        <dl class="spec times" id="times"></dl>
      </section>
    </div>
    <section class="log-section">
      <h2>Log
        <a href="/api/v1/builds/${enc}/log" target="_blank" rel="noopener" class="small" id="raw-log">raw</a>
        <label class="small"><input type="checkbox" id="follow" checked> follow</label>
        <span class="small muted" id="log-status"></span>
      </h2>
      <pre class="log empty" id="log"></pre>
    </section>
    <section><h2>Artifacts</h2><div id="artifacts" class="muted">Loading…</div></section>`}`;

  const $ = (sel) => root.querySelector(sel);
  const flash = (msg) => { const e = $('#build-error'); e.hidden = !msg; e.textContent = msg || ''; };
  let rec = null;
  let log = null;
  let poller = null;

  $('#cancel').onclick = async () => {
    if (!window.confirm(`Cancel build ${id}?`)) return;
    $('#cancel').disabled = true;
    try {
      show(await api(`/api/v1/builds/${enc}/cancel`, { method: 'POST' }));
      flash('');
    } catch (e) {
      flash(`Could not cancel: ${e.message}`);
    } finally {
      $('#cancel').disabled = false;
    }
    refresh();
  };
  $('#rebuild').onclick = async () => {
    $('#rebuild').disabled = true;
    try {
      const b = await api(`/api/v1/builds/${enc}/rebuild`, { method: 'POST' });
      location.hash = `#/builds/${b.id}`;
    } catch (e) {
      flash(`Could not rebuild: ${e.message}`);
      $('#rebuild').disabled = false;
    }
  };

  function show(b) {
    const final = FINAL.has(b.state);
    const changes = can('submitter');
    $('#state').innerHTML = stateBadge(b.state).toString();
    $('#reason').textContent = b.reason || '';
    $('#cancel').hidden = !changes || final;
    $('#rebuild').hidden = !changes;
    $('#resubmit').hidden = !changes;
    $('#readonly').hidden = changes;
    if (!rec) $('#spec').innerHTML = specHtml(b).toString();
    $('#history').innerHTML = (b.history || []).map((h) => html`
      <tr><td>${stateBadge(h.state)}</td><td title="${ago(h.at)}">${clock(h.at)}</td><td>${h.reason}</td></tr>`).join('');
    $('#times').innerHTML = html`
      <dt>Agent</dt><dd>${b.agent_id || '-'}${b.host ? ` on ${b.host}` : ''}</dd>
      <dt>Attempt</dt><dd>${b.attempt}</dd>
      <dt>Commit</dt><dd class="mono">${b.commit || '-'}</dd>
      <dt>Duration</dt><dd>${buildDuration(b)}</dd>
      <dt>Exit code</dt><dd>${b.exit_code ?? '-'}</dd>
      <dt>Log</dt><dd id="log-expiry">${expiry(b, 'log')}</dd>
      <dt>Artifacts</dt><dd id="artifacts-expiry">${expiry(b, 'artifacts')}</dd>`.toString();
    const ret = b.retention || {};
    if (ret.artifacts_expired_at) {
      $('#artifacts').outerHTML = html`<div id="artifacts" class="muted">Artifacts expired on ${dateTime(ret.artifacts_expired_at)} and were deleted.</div>`.toString();
    } else if (b.artifacts) $('#artifacts').outerHTML = artifactsHtml(id, b.artifacts).toString();
    rec = b;
  }

  async function refresh() {
    try {
      const b = await api(`/api/v1/builds/${enc}`);
      show(b);
      flash('');
      if (b.retention?.log_expired_at) {
        $('#log').textContent = `log expired on ${dateTime(b.retention.log_expired_at)} and was deleted`;
        $('#log').classList.remove('empty');
        $('#raw-log').hidden = true;
        $('#follow').parentElement.hidden = true;
        log?.close?.();
      } else if (!log) {
        log = followLog($('#log'), id, {
          startAt: b.log_bytes || 0,
          follow: $('#follow'),
          onStatus: (s) => { $('#log-status').textContent = s; },
        });
        own(log);
      }
      // Once final (and its artifacts are in), one last look is enough.
      if (FINAL.has(b.state) && poller && (poller.finalSeen = (poller.finalSeen || 0) + 1) > 2) poller.stop();
    } catch (e) {
      flash(e.status === 404 ? `There is no build ${id}.` : `Could not load the build: ${e.message}`);
      if (e.status === 404) poller?.stop();
    }
  }
  poller = every(2000, refresh);
}

// What retention does with the build's log or artifacts: pinned, expired, when they expire, or kept.
function expiry(b, what) {
  const r = b.retention || {};
  const gone = what === 'log' ? r.log_expired_at : r.artifacts_expired_at;
  const due = what === 'log' ? r.log_expires_at : r.artifacts_expire_at;
  if (gone) return `${what} expired on ${dateTime(gone)}`;
  if (r.pinned_by) return `kept: pinned by ${r.pinned_by}`;
  if (due) return `${what === 'log' ? 'expires' : 'expire'} on ${dateTime(due)}`;
  return FINAL.has(b.state) ? 'kept (never expires)' : 'expiry set when the build ends';
}

function specHtml(b) {
  const s = b.spec;
  const r = s.resources || {};
  const list = (xs) => (xs && xs.length ? html`<ul class="plain">${xs.map((x) => html`<li class="mono">${x}</li>`)}</ul>` : '-');
  const env = Object.entries(s.env || {});
  const trig = s.trigger || {};
  const detail = Object.entries(trig.detail || {});
  return html`
    <dt>Repository</dt><dd class="mono break">${s.repo}</dd>
    <dt>Ref</dt><dd class="mono">${s.ref || (s.commit ? '-' : 'default branch')}</dd>
    <dt>Commit</dt><dd class="mono">${s.commit || b.commit || '-'}</dd>
    <dt>Image</dt><dd class="mono">${s.image}</dd>
    <dt>${s.steps ? 'Steps' : 'Command'}</dt>
    <dd><pre class="steps">${s.steps ? s.steps.join('\n') : (s.command || []).map(shellQuote).join(' ')}</pre></dd>
    <dt>Resources</dt><dd>${r.cpus} CPUs, ${mem(r.mem)} memory${r.disk ? `, ${mem(r.disk)} disk` : ''}</dd>
    <dt>Environment</dt><dd>${env.length ? list(env.map(([k, v]) => `${k}=${v}`)) : '-'}</dd>
    <dt>Secrets</dt><dd>${(s.secrets || []).join(', ') || '-'}</dd>
    <dt>Constraints</dt><dd>${list(s.constraints)}</dd>
    <dt>Artifacts</dt><dd>${list(s.artifacts)}</dd>
    <dt>Timeout</dt><dd>${s.timeout} s</dd>
    <dt>Priority</dt><dd>${s.priority}${s.retries ? `, ${s.retries} retries` : ''}</dd>
    <dt>Trigger</dt><dd>${trig.kind || '-'}${buildUser(b) ? ` by ${buildUser(b)}` : ''}
      ${trig.url ? html` (<a href="${safeUrl(trig.url)}" rel="noopener">${trig.url}</a>)` : ''}
      ${detail.length ? html`<div class="sub">${detail.map(([k, v]) => `${k}=${v}`).join(', ')}</div>` : ''}
      ${trig.detail?.rebuild_of ? html`<div class="sub">rebuild of <a href="#/builds/${trig.detail.rebuild_of}">${trig.detail.rebuild_of}</a></div>` : ''}</dd>
    <dt>Queued</dt><dd>${clock(b.created_at)} (${ago(b.created_at)})</dd>`;
}

function artifactsHtml(id, artifacts) {
  if (!artifacts.length) return html`<div id="artifacts" class="muted">No artifacts.</div>`;
  const total = artifacts.reduce((n, a) => n + a.size, 0);
  return html`<div id="artifacts"><table class="artifacts">
    <thead><tr><th>Path</th><th class="num">Size</th><th>SHA-256</th></tr></thead>
    <tbody>${artifacts.map((a) => html`<tr>
      <td><a class="mono" download href="/api/v1/builds/${encodeURIComponent(id)}/artifacts/${raw(a.path.split('/').map(encodeURIComponent).join('/'))}">${a.path}</a></td>
      <td class="num" title="${a.size} bytes">${bytes(a.size)}</td>
      <td class="mono sha">${a.sha256}</td></tr>`)}</tbody>
    <tfoot><tr><td>${artifacts.length} file${artifacts.length === 1 ? '' : 's'}</td><td class="num">${bytes(total)}</td><td></td></tr></tfoot>
  </table></div>`;
}

function shellQuote(arg) {
  return /^[A-Za-z0-9_./=:,+@%-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, "'\\''")}'`;
}

// Only http(s) links from a trigger (a Jenkins BUILD_URL); anything else (javascript:) is not a link.
function safeUrl(url) {
  return /^https?:\/\//i.test(url) ? url : '#';
}
