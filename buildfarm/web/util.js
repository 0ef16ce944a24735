// Small helpers every view uses: escaping, the API, formatting, and timers owned by the current view.

const ESC = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

// Escape text for HTML content and attribute values. Everything from the API goes through this.
export function esc(value) {
  return String(value ?? '').replace(/[&<>"']/g, (c) => ESC[c]);
}

// A tagged template that escapes every interpolated value, unless it is raw() markup.
export function html(strings, ...values) {
  let out = strings[0];
  values.forEach((v, i) => {
    out += (Array.isArray(v) ? v.map(part).join('') : part(v)) + strings[i + 1];
  });
  return new Raw(out);
}
class Raw { constructor(s) { this.s = s; } toString() { return this.s; } }
export function raw(s) { return new Raw(s); }
function part(v) { return v instanceof Raw ? v.s : esc(v); }

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error || `HTTP ${status}`);
    this.status = status;
    this.details = body?.details || [];
  }
}

// Call the farm's API with the session cookie. JSON in, JSON out; errors as ApiError.
export async function api(path, { method = 'GET', body } = {}) {
  const opts = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (body !== undefined) {
    opts.body = JSON.stringify(body);
    opts.headers['Content-Type'] = 'application/json';
  }
  let res;
  try {
    res = await fetch(path, opts);
  } catch (e) {
    throw new ApiError(0, { error: `the farm did not answer (${e.message})` });
  }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { error: text.slice(0, 300) }; }
  if (!res.ok) {
    if (res.status === 401) window.dispatchEvent(new CustomEvent('bf-unauthorized'));
    throw new ApiError(res.status, data);
  }
  return data;
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

export function duration(secs) {
  if (secs === null || secs === undefined || Number.isNaN(secs)) return '-';
  secs = Math.max(0, Math.floor(secs));
  if (secs < 60) return `${secs}s`;
  if (secs < 3600) return `${Math.floor(secs / 60)}m${String(secs % 60).padStart(2, '0')}s`;
  return `${Math.floor(secs / 3600)}h${String(Math.floor((secs % 3600) / 60)).padStart(2, '0')}m`;
}

export function ago(ts) {
  return ts ? `${duration(Date.now() / 1000 - ts)} ago` : '-';
}

export function clock(ts) {
  if (!ts) return '-';
  const d = new Date(ts * 1000);
  const sameDay = d.toDateString() === new Date().toDateString();
  const t = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
  return sameDay ? t : `${d.toISOString().slice(0, 10)} ${t}`;
}

// A date and time, always with the date (local time, 24 h): 2026-12-03 14:05.
export function dateTime(ts) {
  if (!ts) return '-';
  const d = new Date(ts * 1000);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export function buildDuration(b) {
  if (!b.started_at) return '-';
  return duration((b.finished_at || Date.now() / 1000) - b.started_at);
}

export function bytes(n) {
  if (n === null || n === undefined) return '-';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return i === 0 ? `${n} B` : `${n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}

export function mem(mb) {
  if (mb === null || mb === undefined) return '-';
  return mb >= 1024 ? `${(mb / 1024).toFixed(mb % 1024 ? 1 : 0)} GB` : `${mb} MB`;
}

export const STATES = ['queued', 'launching', 'running', 'succeeded', 'failed', 'timed_out', 'cancelled', 'error'];
export const FINAL = new Set(['succeeded', 'failed', 'timed_out', 'cancelled', 'error']);

export function stateBadge(state) {
  const s = STATES.includes(state) ? state : 'unknown';
  return html`<span class="state state-${s}">${String(state).replace('_', ' ')}</span>`;
}

export function where(spec) {
  const at = spec.ref || (spec.commit || '').slice(0, 10) || 'default branch';
  return `${spec.repo}@${at}`;
}

// The user a build belongs to: the trigger's user (e.g. a webhook's pusher), else who submitted it.
export function buildUser(b) {
  return b.spec?.trigger?.user || b.submitted_by || '';
}

// Timers and event sources that belong to the view on screen; the router stops them on navigation.
const owned = new Set();
export function every(ms, fn) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    // A tab in the background does not poll; it catches up as soon as it is shown again.
    if (document.hidden) {
      document.addEventListener('visibilitychange', tick, { once: true });
      return;
    }
    try { await fn(); } catch (e) { console.warn(e); }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  const handle = { stop() { stopped = true; clearTimeout(timer); owned.delete(handle); } };
  owned.add(handle);
  tick();
  return handle;
}
export function own(closable) {
  const handle = { stop() { closable.close(); owned.delete(handle); } };
  owned.add(handle);
  return handle;
}
export function stopAll() {
  for (const h of [...owned]) h.stop();
}

export function setTitle(text) {
  document.title = `${text} · buildfarm`;
}
