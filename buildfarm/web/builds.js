// #/builds: the builds table, filtered by state, repo, trigger and user, paged, refreshed every 2 s.
// The filters live in the URL (#/builds?state=running&page=2), so a filtered view can be shared.

import {
  api, html, raw, query, every, ago, clock, buildDuration, mem, stateBadge, where, buildUser, STATES, setTitle,
} from './util.js';

const PAGE = 25;
const TRIGGERS = ['cli', 'api', 'hook', 'webhook', 'pipeline', 'jenkins', 'rebuild'];

export function render(root, params) {
  const f = {
    state: params.get('state') || '',
    repo: params.get('repo') || '',
    trigger: params.get('trigger') || '',
    user: params.get('user') || '',
  };
  const page = Math.max(1, Number(params.get('page')) || 1);
  setTitle('Builds');
  const opt = (value, current, label = value) =>
    html`<option value="${value}" ${raw(value === current ? 'selected' : '')}>${label}</option>`;
  root.innerHTML = `${html`
    <div class="page-head">
      <h1>Builds</h1>
      <span class="live" id="live" title="refreshed every 2 s">live</span>
    </div>
    <form class="filters" id="filters">
      <label>State <select name="state">${opt('', f.state, 'any')}${STATES.map((s) => opt(s, f.state))}</select></label>
      <label>Repository <input name="repo" value="${f.repo}" placeholder="git URL" list="repos" size="34"></label>
      <label>Trigger <select name="trigger">${opt('', f.trigger, 'any')}${TRIGGERS.map((t) => opt(t, f.trigger))}</select></label>
      <label>User <input name="user" value="${f.user}" size="12"></label>
      <button type="submit">Filter</button>
      <a href="#/builds" class="clear">clear</a>
      <datalist id="repos"></datalist>
    </form>
    <div class="banner error" id="list-error" hidden></div>
    <div class="table-wrap">
      <table class="builds" id="builds">
        <thead><tr>
          <th>Build</th><th>Repository @ ref</th><th>Trigger</th><th>Image</th>
          <th class="num">CPUs</th><th class="num">Memory</th><th>Agent</th><th>State</th>
          <th>Queued</th><th>Started</th><th class="num">Duration</th>
        </tr></thead>
        <tbody id="rows"><tr><td colspan="11" class="muted">Loading…</td></tr></tbody>
      </table>
    </div>
    <div class="pager" id="pager"></div>`}`;

  const form = root.querySelector('#filters');
  const apply = (ev) => {
    ev?.preventDefault();
    const data = Object.fromEntries(new FormData(form));
    delete data.page;
    location.hash = `#/builds${query(data)}`;
  };
  form.onsubmit = apply;
  for (const sel of form.querySelectorAll('select')) sel.onchange = apply;

  let lastRows = '';
  let lastPager = '';
  const repos = new Set();
  every(2000, async () => {
    const err = root.querySelector('#list-error');
    let data;
    try {
      data = await api(`/api/v1/builds${query({ ...f, limit: PAGE, offset: (page - 1) * PAGE })}`);
    } catch (e) {
      err.hidden = false;
      err.textContent = `Could not load the builds: ${e.message}`;
      root.querySelector('#live').classList.add('stale');
      return;
    }
    err.hidden = true;
    root.querySelector('#live').classList.remove('stale');
    const list = data.builds || [];
    const rows = list.length ? list.map(row).join('')
      : html`<tr><td colspan="11" class="muted empty">No builds${f.state || f.repo || f.trigger || f.user ? ' match these filters' : ' yet'}.</td></tr>`.toString();
    if (rows !== lastRows) {
      root.querySelector('#rows').innerHTML = rows;
      lastRows = rows;
    }
    const total = data.total ?? list.length + (page - 1) * PAGE;
    const pager = pagerHtml(f, page, total, list.length);
    if (pager !== lastPager) {
      root.querySelector('#pager').innerHTML = pager;
      lastPager = pager;
    }
    let grew = false;
    for (const b of list) if (!repos.has(b.spec.repo)) { repos.add(b.spec.repo); grew = true; }
    if (grew) root.querySelector('#repos').innerHTML = [...repos].map((r) => html`<option value="${r}">`).join('');
  });
}

function row(b) {
  const s = b.spec;
  const trig = s.trigger || {};
  return html`
    <tr class="build-row" data-id="${b.id}" data-state="${b.state}">
      <td><a href="#/builds/${b.id}" class="mono build-link">${b.id}</a><div class="sub">#${b.number}</div></td>
      <td class="repo-cell"><div class="ellipsis" title="${where(s)}">${where(s)}</div>
        <div class="sub mono">${b.commit ? b.commit.slice(0, 10) : (s.commit || '').slice(0, 10) || ''}</div></td>
      <td>${trig.kind || '-'}<div class="sub">${buildUser(b)}</div>${b.team ? html`<div class="sub team">team ${b.team}</div>` : ''}</td>
      <td class="mono ellipsis" title="${s.image}">${s.image}</td>
      <td class="num">${s.resources?.cpus ?? '-'}</td>
      <td class="num">${mem(s.resources?.mem)}</td>
      <td class="ellipsis" title="${b.host || ''}">${b.agent_id || '-'}</td>
      <td title="${b.reason}">${stateBadge(b.state)}</td>
      <td title="${clock(b.created_at)}">${ago(b.created_at)}</td>
      <td>${clock(b.started_at)}</td>
      <td class="num">${buildDuration(b)}</td>
    </tr>`.toString();
}

function pagerHtml(f, page, total, shown) {
  const first = total ? (page - 1) * PAGE + 1 : 0;
  const last = (page - 1) * PAGE + shown;
  const pages = Math.max(1, Math.ceil(total / PAGE));
  const link = (p, label) => html`<a href="#/builds${query({ ...f, page: p > 1 ? p : '' })}">${label}</a>`;
  return html`<span>${first}–${last} of ${total}</span>
    ${page > 1 ? link(page - 1, '‹ newer') : raw('<span class="muted">‹ newer</span>')}
    <span>page ${page} of ${pages}</span>
    ${page < pages ? link(page + 1, 'older ›') : raw('<span class="muted">older ›</span>')}`.toString();
}
