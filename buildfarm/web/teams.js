// #/teams: how the teams share the pool. Each team's dominant share over the last hours as a
// stacked area chart (SVG drawn here, as cluster.js draws its bars) with the teams' guarantees
// stacked as dashed lines; who borrows from whom now; what waits per team; balances and ledgers.

import { api, esc, html, raw, every, duration, clock, setTitle } from './util.js';

const HOURS = 6;
const COLOURS = ['#4c78a8', '#f58518', '#54a24b', '#e45756', '#72b7b2', '#b279a2', '#ff9da6', '#9d755d', '#bab0ac', '#eeca3b'];

export function render(root) {
  setTitle('Teams');
  root.innerHTML = `
    <div class="page-head"><h1>Teams</h1><span class="live" id="live" title="refreshed every 5 s">live</span></div>
    <div class="banner error" id="teams-error" hidden></div>
    <section><h2>Share of the pool, last ${HOURS} hours</h2><div id="shares" class="muted">Loading…</div></section>
    <div class="grid2">
      <section><h2>Teams now</h2><div id="team-table" class="muted">Loading…</div></section>
      <section><h2>Who borrows from whom</h2><div id="borrowing" class="muted">Loading…</div></section>
    </div>
    <section><h2>Ledger</h2><div id="ledger" class="muted">Pick a team above.</div></section>`;
  const $ = (s) => root.querySelector(s);
  const last = {};
  const put = (sel, markup) => {
    if (last[sel] !== markup) { $(sel).outerHTML = markup; last[sel] = markup; }
  };
  root.addEventListener('click', async (ev) => {
    const a = ev.target.closest('a[data-ledger]');
    if (!a) return;
    ev.preventDefault();
    const got = await api(`/api/v1/teams/${encodeURIComponent(a.dataset.ledger)}/ledger?limit=50`);
    $('#ledger').outerHTML = ledgerHtml(got);
  });
  every(5000, async () => {
    let o;
    try {
      o = await api(`/api/v1/teams-overview?hours=${HOURS}`);
    } catch (e) {
      $('#teams-error').hidden = false;
      $('#teams-error').textContent = `Could not load the teams: ${e.message}`;
      $('#live').classList.add('stale');
      return;
    }
    $('#teams-error').hidden = true;
    $('#live').classList.remove('stale');
    if (!o.teams.length) {
      put('#shares', '<div id="shares" class="muted">No teams yet: an admin creates one with <code>buildfarm team create</code>.</div>');
      return;
    }
    const colour = Object.fromEntries(o.teams.map((t, i) => [t.name, COLOURS[i % COLOURS.length]]));
    put('#shares', `<div id="shares">${chart(o, colour)}</div>`);
    put('#team-table', tableHtml(o, colour));
    put('#borrowing', borrowingHtml(o.borrowing));
  });
}

const pct = (x) => `${(x * 100).toFixed(1)}%`;

function tableHtml(o, colour) {
  return html`<div id="team-table"><table class="teams"><thead><tr><th>Team</th><th>Share</th><th>Guarantee</th>
    <th>Using</th><th>Waiting</th><th>Credits</th></tr></thead><tbody>${o.teams.map((t) => html`
    <tr data-team="${t.name}"><td><span class="key" style="background:${colour[t.name]}"></span> ${t.name}</td>
      <td class="${t.share > t.guarantee_share ? 'over' : ''}">${pct(t.share)}</td><td>${pct(t.guarantee_share)}
        <span class="muted small">(${t.guarantee.cpus} cpus)</span></td>
      <td>${t.used.cpus} cpus</td>
      <td class="waiting">${t.waiting ? html`${t.waiting} <span class="muted small">oldest ${duration(t.oldest_wait)}</span>` : raw('<span class="muted">none</span>')}</td>
      <td><a href="#/teams" data-ledger="${t.name}">${t.balance.toFixed(2)}</a></td></tr>`)}</tbody></table></div>`.toString();
}

function borrowingHtml(rows) {
  if (!rows.length) return '<div id="borrowing" class="muted">Nobody runs on capacity lent by another team.</div>';
  return html`<div id="borrowing"><ul class="borrowing">${rows.map((r) => html`
    <li data-borrower="${r.borrower}" data-lender="${r.lender}"><b>${r.borrower}</b> borrows ${r.cpus} cpus from <b>${r.lender}</b></li>`)}
    </ul></div>`.toString();
}

function ledgerHtml(got) {
  const entries = (got.entries || []).slice().reverse();
  return html`<div id="ledger"><p>Team <b>${got.team}</b>: balance <b id="balance">${got.balance.toFixed(3)}</b> credits</p>
    ${entries.length ? html`<table class="ledger"><thead><tr><th>When</th><th>Kind</th><th>Amount</th><th>What</th></tr></thead>
    <tbody>${entries.map((e) => html`<tr class="entry-${e.kind}"><td>${clock(e.at)}</td><td>${e.kind}</td>
      <td class="num">${(e.amount >= 0 ? '+' : '') + e.amount.toFixed(3)}</td><td class="small">${e.note}</td></tr>`)}</tbody></table>`
    : raw('<p class="muted">No entries yet.</p>')}</div>`.toString();
}

// The teams' shares stacked (first team at the bottom); their guarantees stacked the same way, dashed.
export function chart(o, colour) {
  const W = 640; const H = 200; const L = 38; const B = 22; const T = 8; const R = 6;
  // the samples the scheduler kept (one a minute), then the shares now
  const samples = [...o.history, { at: o.now, shares: Object.fromEntries(o.teams.map((t) => [t.name, t.share])) }];
  const t0 = Math.min(samples[0].at, o.now - HOURS * 3600 / 6); const t1 = o.now;
  const x = (t) => L + (W - L - R) * ((t - t0) / Math.max(t1 - t0, 1));
  const y = (v) => T + (H - T - B) * (1 - Math.min(v, 1));
  const parts = [];
  for (const v of [0, 0.5, 1]) {
    parts.push(`<line class="grid" x1="${L}" x2="${W - R}" y1="${y(v)}" y2="${y(v)}"/>`,
      `<text class="axis" x="${L - 4}" y="${y(v) + 4}" text-anchor="end">${v * 100}%</text>`);
  }
  let below = samples.map(() => 0);
  let stackedGuarantee = 0;
  for (const t of o.teams) {
    const above = samples.map((s, i) => below[i] + (s.shares[t.name] || 0));
    const top = samples.map((s, i) => `${x(s.at).toFixed(1)},${y(above[i]).toFixed(1)}`);
    const bottom = samples.map((s, i) => `${x(s.at).toFixed(1)},${y(below[i]).toFixed(1)}`).reverse();
    const points = samples.length === 1 ? [`${L},${y(above[0])}`, `${W - R},${y(above[0])}`, `${W - R},${y(below[0])}`, `${L},${y(below[0])}`]
      : [...top, ...bottom];
    parts.push(`<polygon class="area" data-team="${esc(t.name)}" fill="${colour[t.name]}" fill-opacity="0.75" points="${points.join(' ')}"><title>${esc(t.name)}: ${pct(t.share)} now, guarantee ${pct(t.guarantee_share)}</title></polygon>`);
    stackedGuarantee += t.guarantee_share;
    parts.push(`<line class="guarantee" data-team="${esc(t.name)}" stroke="${colour[t.name]}" stroke-dasharray="4 3" x1="${L}" x2="${W - R}" y1="${y(stackedGuarantee).toFixed(1)}" y2="${y(stackedGuarantee).toFixed(1)}"/>`);
    below = above;
  }
  for (let h = 0; h <= HOURS; h += 1) {
    const t = t1 - h * 3600;
    if (t < t0) break;
    parts.push(`<text class="axis" x="${x(t).toFixed(1)}" y="${H - 6}" text-anchor="middle">${h ? `-${h}h` : 'now'}</text>`);
  }
  parts.push(`<line class="axis-line" x1="${L}" x2="${W - R}" y1="${y(0)}" y2="${y(0)}"/>`);
  const legend = `<div class="legend">${o.teams.map((t) => `<span class="key" style="background:${colour[t.name]}"></span>${esc(t.name)}`).join(' ')}
    <span class="muted">(areas: share of the pool; dashed: guarantees, stacked alike)</span></div>`;
  return `<svg class="chart" id="shares-chart" viewBox="0 0 ${W} ${H}" role="img" aria-label="the teams' shares of the pool over time">${parts.join('')}</svg>${legend}`;
}
