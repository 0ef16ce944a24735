// #/cluster: the agents (local or Mesos) with capacity and use, the queue by priority, and builds
// ended per 10 minutes over the last hours as a small stacked bar chart (SVG drawn here), and a
// line on the schedulers: which one leads since when, with which fencing token, and the standbys.

import { api, esc, html, raw, every, mem, ago, where, clock, setTitle } from './util.js';

const HOURS = 6;

export function render(root) {
  setTitle('Cluster');
  root.innerHTML = `
    <div class="page-head"><h1>Cluster</h1><span class="live" id="live" title="refreshed every 3 s">live</span></div>
    <div class="banner error" id="cluster-error" hidden></div>
    <p id="schedulers" class="muted">Schedulers: loading…</p>
    <section><h2>Agents</h2><div id="agents" class="muted">Loading…</div></section>
    <div class="grid2">
      <section><h2>Queue</h2><div id="queue" class="muted">Loading…</div></section>
      <section><h2>Throughput, last ${HOURS} hours</h2><div id="throughput" class="muted">Loading…</div></section>
    </div>`;
  const $ = (s) => root.querySelector(s);
  const last = {};
  const put = (sel, markup) => {
    if (last[sel] !== markup) { $(sel).outerHTML = markup; last[sel] = markup; }
  };
  every(3000, async () => {
    const [agents, queue, tp, sch] = await Promise.allSettled([
      api('/api/v1/agents'), api('/api/v1/queue'), api(`/api/v1/stats/throughput?hours=${HOURS}`),
      api('/api/v1/schedulers')]);
    const failed = [agents, queue].find((r) => r.status === 'rejected');
    $('#cluster-error').hidden = !failed;
    $('#cluster-error').textContent = failed ? `Could not load the cluster: ${failed.reason.message}` : '';
    $('#live').classList.toggle('stale', Boolean(failed));
    if (agents.status === 'fulfilled') put('#agents', agentsHtml(agents.value.agents || []));
    if (queue.status === 'fulfilled') put('#queue', queueHtml(queue.value));
    if (sch.status === 'fulfilled') put('#schedulers', schedulersHtml(sch.value));
    if (tp.status === 'fulfilled') put('#throughput', `<div id="throughput">${chart(tp.value)}</div>`);
    else if (tp.reason.status === 404) put('#throughput', '<div id="throughput" class="muted">This farm does not keep throughput figures.</div>');
  });
}

function schedulersHtml(s) {
  const lead = s.leader;
  const standbys = s.standbys || [];
  const who = lead
    ? html`<span class="mono">${lead.id}</span> leads since ${clock(lead.since)} (fencing token ${lead.fence},
      renewed ${ago(lead.renewed)})`
    : html`<strong>no scheduler leads</strong>: nothing is placed until one runs`;
  const rest = standbys.length
    ? html`; standing by: ${standbys.map((x) => html`<span class="mono" title="last heartbeat ${ago(x.last_seen)}">${x.id}</span> `)}`
    : '; no standby';
  return html`<p id="schedulers" class="schedulers">Schedulers: ${who}${rest}</p>`.toString();
}

function used(a) {
  if (a.used) return a.used;
  if (a.free) return { cpus: a.capacity.cpus - a.free.cpus, mem: a.capacity.mem - a.free.mem, disk: a.capacity.disk - a.free.disk };
  return null;
}

function meter(label, use, cap, fmt) {
  if (!cap) return html`<div class="meter"><span class="meter-label">${label}</span><span class="muted">none</span></div>`;
  const pct = use === null ? 0 : Math.min(100, Math.max(0, (use / cap) * 100));
  const level = pct >= 90 ? 'high' : pct >= 60 ? 'mid' : 'low';
  return html`<div class="meter" title="${label}: ${use === null ? '?' : fmt(use)} of ${fmt(cap)} in use">
    <span class="meter-label">${label}</span>
    <span class="meter-bar"><span class="meter-fill ${level}" style="width:${pct.toFixed(1)}%"></span></span>
    <span class="meter-text">${use === null ? '?' : fmt(use)} / ${fmt(cap)}</span></div>`;
}

const round = (x) => String(Math.round(x * 100) / 100);

function agentsHtml(agents) {
  if (!agents.length) return '<div id="agents" class="muted">No agents yet: the scheduler publishes them on its first round.</div>';
  return html`<div id="agents" class="agents">${agents.map((a) => {
    const u = used(a) || {};
    const kind = a.backend || (String(a.agent_id).startsWith('local-') ? 'local' : 'mesos');
    const attrs = Object.entries(a.attributes || {});
    return html`<article class="agent" data-agent="${a.agent_id}">
      <header><span class="mono agent-id">${a.agent_id}</span> <span class="tag tag-${kind}">${kind}</span>
        <span class="muted">${a.host || ''}</span></header>
      ${meter('CPUs', u.cpus ?? null, a.capacity.cpus, round)}
      ${meter('Memory', u.mem ?? null, a.capacity.mem, mem)}
      ${a.capacity.disk ? meter('Disk', u.disk ?? null, a.capacity.disk, mem) : ''}
      <div class="chips">${attrs.map(([k, v]) => html`<span class="chip">${k}:${v}</span>`)}</div>
      ${a.builds?.length ? html`<div class="sub">running: ${a.builds.map((id) => html`<a class="mono" href="#/builds/${id}">${id}</a> `)}</div>` : ''}
    </article>`;
  })}</div>`.toString();
}

function queueHtml(q) {
  const d = q.depth || {};
  const builds = (q.builds || []).slice(0, 20);
  return html`<div id="queue">
    <div class="depths">${['high', 'normal', 'low'].map((p) => html`
      <div class="depth prio-${p}"><span class="n">${d[p] ?? 0}</span><span class="muted">${p}</span></div>`)}</div>
    ${builds.length ? html`<table class="queue"><thead><tr><th>Build</th><th>Priority</th><th>Repository @ ref</th><th>Waiting</th><th>Why</th></tr></thead>
      <tbody>${builds.map((b) => html`<tr><td><a class="mono" href="#/builds/${b.id}">${b.id}</a></td>
        <td><span class="prio prio-${b.priority}">${b.priority}</span></td>
        <td class="ellipsis" title="${where(b.spec)}">${where(b.spec)}</td>
        <td title="${clock(b.created_at)}">${ago(b.created_at)}</td><td class="small">${b.reason}</td></tr>`)}</tbody></table>`
    : raw('<p class="muted">Nothing is waiting.</p>')}</div>`.toString();
}

// Builds ended per bucket, stacked: succeeded (bottom), failed, other. A label every hour.
export function chart(data) {
  const buckets = data.buckets || [];
  const W = 560; const H = 170; const L = 34; const B = 22; const T = 8; const R = 6;
  const n = Math.max(buckets.length, 1);
  const max = Math.max(1, ...buckets.map((b) => b.succeeded + b.failed + b.other));
  const top = niceMax(max);
  const slot = (W - L - R) / n;
  const bar = Math.max(1, slot - 2);
  const y = (v) => T + (H - T - B) * (1 - v / top);
  const parts = [];
  for (const t of [0, top / 2, top]) {
    parts.push(`<line class="grid" x1="${L}" x2="${W - R}" y1="${y(t)}" y2="${y(t)}"/>`,
      `<text class="axis" x="${L - 4}" y="${y(t) + 4}" text-anchor="end">${Math.round(t * 10) / 10}</text>`);
  }
  let total = { succeeded: 0, failed: 0, other: 0 };
  buckets.forEach((b, i) => {
    const x = L + i * slot + 1;
    let base = 0;
    for (const k of ['succeeded', 'failed', 'other']) {
      const v = b[k] || 0;
      total[k] += v;
      if (!v) continue;
      parts.push(`<rect class="bar bar-${k}" x="${x.toFixed(1)}" y="${y(base + v).toFixed(1)}" width="${bar.toFixed(1)}" height="${(y(base) - y(base + v)).toFixed(1)}"><title>${esc(clock(b.start))}: ${v} ${k}</title></rect>`);
      base += v;
    }
    const d = new Date(b.start * 1000);
    if (d.getMinutes() === 0 && x < W - R - 28) {
      const label = `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
      parts.push(`<text class="axis" x="${x.toFixed(1)}" y="${H - 6}">${label}</text>`);
    }
  });
  parts.push(`<line class="axis-line" x1="${L}" x2="${W - R}" y1="${y(0)}" y2="${y(0)}"/>`);
  const legend = `<div class="legend"><span class="key bar-succeeded"></span>${total.succeeded} succeeded
    <span class="key bar-failed"></span>${total.failed} failed <span class="key bar-other"></span>${total.other} other
    <span class="muted">(per ${Math.round((data.bucket_seconds || 600) / 60)} min)</span></div>`;
  return `<svg class="chart" id="throughput-chart" viewBox="0 0 ${W} ${H}" role="img" aria-label="builds ended per bucket">${parts.join('')}</svg>${legend}`;
}

function niceMax(v) {
  for (const m of [1, 2, 4, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000]) if (v <= m) return m;
  return Math.ceil(v / 1000) * 1000;
}
