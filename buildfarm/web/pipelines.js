// #/pipelines: the pipelines and their recent runs; #/pipelines/RUN: one run as a graph of jobs
// (boxes coloured by state, edges from `needs`). A farm without pipelines answers 404.

import { api, esc, html, raw, every, ago, clock, duration, setTitle, ApiError } from './util.js';
import { can } from './session.js';

const DISABLED = '<p class="banner info" id="pipelines-disabled">pipelines are not enabled on this farm</p>';

export function renderList(root) {
  setTitle('Pipelines');
  root.innerHTML = `<div class="page-head"><h1>Pipelines</h1><span class="live" id="live">live</span></div>
    <div class="banner error" id="pl-error" hidden></div>
    <div id="pl-body"><p class="muted">Loading…</p></div>`;
  const $ = (s) => root.querySelector(s);
  let defsShown = false;
  let lastRuns = '';
  every(3000, async () => {
    let runs;
    try {
      runs = (await api('/api/v1/pipeline-runs?limit=50')).runs || [];
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        $('#pl-body').innerHTML = DISABLED;
        $('#live').hidden = true;
        return;
      }
      $('#pl-error').hidden = false;
      $('#pl-error').textContent = `Could not load the runs: ${e.message}`;
      return;
    }
    $('#pl-error').hidden = true;
    if (!defsShown) {
      defsShown = true;
      $('#pl-body').innerHTML = '<section><h2>Runs</h2><div id="runs"></div></section><section><h2>Pipelines</h2><div id="defs" class="muted">Loading…</div></section>';
      loadDefinitions($('#defs'));
    }
    const markup = runsHtml(runs);
    if (markup !== lastRuns) { $('#runs').innerHTML = markup; lastRuns = markup; }
  });
}

function runsHtml(runs) {
  if (!runs.length) return '<p class="muted">No runs yet.</p>';
  return html`<table class="runs"><thead><tr><th>Run</th><th>Pipeline</th><th>State</th><th>Jobs</th><th>Trigger</th><th>Started</th><th class="num">Duration</th></tr></thead>
    <tbody>${runs.map((r) => html`<tr class="run-row">
      <td><a class="mono" href="#/pipelines/${r.id}">${r.id}</a></td><td>${r.pipeline}</td><td>${runState(r.state)}</td>
      <td class="small">${countsText(r.counts)}</td><td>${triggerText(r.trigger)}</td>
      <td title="${clock(r.created_at)}">${ago(r.created_at)}</td>
      <td class="num">${r.created_at ? duration((r.finished_at || Date.now() / 1000) - r.created_at) : '-'}</td></tr>`)}</tbody></table>`.toString();
}

function countsText(counts) {
  const entries = Object.entries(counts || {});
  return entries.length ? entries.map(([state, n]) => `${n} ${state.replace('_', ' ')}`).join(', ') : '-';
}

function triggerText(t) {
  if (!t) return '-';
  if (typeof t === 'string') return t;
  return [t.kind, t.user].filter(Boolean).join(' by ') || '-';
}

function runState(state) {
  return html`<span class="state state-${/^[a-z_]+$/.test(state) ? state : 'unknown'}">${String(state).replace('_', ' ')}</span>`;
}

async function loadDefinitions(box) {
  let defs;
  try {
    defs = (await api('/api/v1/pipelines')).pipelines || [];
  } catch (e) {
    box.textContent = `Could not load the pipelines: ${e.message}`;
    return;
  }
  if (!defs.length) { box.textContent = 'No pipelines are defined.'; return; }
  box.classList.remove('muted');
  box.innerHTML = html`<div class="pipelines">${defs.map((p, i) => {
    const params = Object.entries(p.parameters || {});
    return html`<form class="pipeline-def" data-index="${i}">
      <header><strong>${p.name}</strong> <span class="muted small">${p.file || ''}</span>
        ${(p.schedule || []).length ? html`<span class="small">schedule: <code>${p.schedule.join(', ')}</code></span>` : ''}</header>
      ${params.map(([k, v]) => html`<label class="inline">${k} <input name="${k}" value="${paramDefault(v)}" size="12"></label>`)}
      ${can('submitter') ? raw('<button type="submit">Run</button>') : ''}
      <span class="field-error" role="alert"></span>
    </form>`;
  })}</div>`.toString();
  for (const form of box.querySelectorAll('form')) {
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      const p = defs[Number(form.dataset.index)];
      const parameters = Object.fromEntries(new FormData(form));
      try {
        const run = await api('/api/v1/pipeline-runs', { method: 'POST', body: { pipeline: p.name, parameters } });
        location.hash = `#/pipelines/${run.id}`;
      } catch (e) {
        form.querySelector('.field-error').textContent = e.message;
      }
    };
  }
}

function paramDefault(v) {
  if (v && typeof v === 'object') return v.default ?? '';
  return v ?? '';
}

export function renderRun(root, id) {
  setTitle(`Pipeline run ${id}`);
  const enc = encodeURIComponent(id);
  root.innerHTML = `${html`<div class="page-head"><h1>Pipeline run <span class="mono">${id}</span> <span id="run-state"></span></h1>
    <div class="actions"><button type="button" class="danger" id="run-cancel" hidden>Cancel run</button></div></div>
    <p id="run-meta" class="muted"></p>
    <div class="banner error" id="run-error" hidden></div>
    <section><h2>Jobs</h2><div id="graph" class="graph-wrap"></div></section>
    <section><div id="jobs"></div></section>`}`;
  const $ = (s) => root.querySelector(s);
  $('#run-cancel').onclick = async () => {
    if (!window.confirm(`Cancel pipeline run ${id}?`)) return;
    try {
      await api(`/api/v1/pipeline-runs/${enc}/cancel`, { method: 'POST' });
    } catch (e) {
      $('#run-error').hidden = false;
      $('#run-error').textContent = `Could not cancel: ${e.message}`;
    }
  };
  let last = '';
  const poller = every(2000, async () => {
    let run;
    try {
      run = await api(`/api/v1/pipeline-runs/${enc}`);
    } catch (e) {
      if (e.status === 404) {
        // Either pipelines are off, or this run does not exist: ask the list, which tells them apart.
        const off = await api('/api/v1/pipeline-runs?limit=1').then(() => false, (e2) => e2.status === 404);
        root.innerHTML = off ? DISABLED : html`<p class="banner error">There is no pipeline run ${id}.</p>`.toString();
        poller.stop();
        return;
      }
      $('#run-error').hidden = false;
      $('#run-error').textContent = `Could not load the run: ${e.message}`;
      return;
    }
    const key = JSON.stringify(run);
    if (key === last) return;
    last = key;
    $('#run-state').innerHTML = runState(run.state).toString();
    $('#run-cancel').hidden = run.state !== 'running' || !can('submitter');
    const params = Object.entries(run.parameters || {}).map(([k, v]) => `${k}=${v}`).join(', ');
    $('#run-meta').textContent = `${run.pipeline} · ${triggerText(run.trigger)} · started ${clock(run.created_at)}`
      + `${run.finished_at ? ` · finished ${clock(run.finished_at)}` : ''}${params ? ` · ${params}` : ''}`
      + `${run.reason && run.reason !== 'started' ? ` · ${run.reason}` : ''}`;
    $('#graph').innerHTML = graph(run.jobs || []);
    $('#jobs').innerHTML = jobsTable(run.jobs || []);
  });
}

// Jobs in columns by depth (a job sits right of everything it needs), edges as curves.
export function graph(jobs) {
  if (!jobs.length) return '<p class="muted">This run has no jobs.</p>';
  const byName = new Map(jobs.map((j) => [j.name, j]));
  const depth = new Map();
  const depthOf = (name, seen = new Set()) => {
    if (depth.has(name)) return depth.get(name);
    if (seen.has(name)) return 0; // a cycle should not exist; do not loop on one
    seen.add(name);
    const needs = (byName.get(name)?.needs || []).filter((n) => byName.has(n));
    const d = needs.length ? 1 + Math.max(...needs.map((n) => depthOf(n, seen))) : 0;
    depth.set(name, d);
    return d;
  };
  const cols = [];
  for (const j of jobs) (cols[depthOf(j.name)] ||= []).push(j);
  const W = 190; const H = 50; const GX = 56; const GY = 14; const P = 8;
  const pos = new Map();
  cols.forEach((col, c) => col.forEach((j, r) => pos.set(j.name, { x: P + c * (W + GX), y: P + r * (H + GY) })));
  const width = P * 2 + cols.length * W + (cols.length - 1) * GX;
  const height = P * 2 + Math.max(...cols.map((c) => c.length)) * (H + GY) - GY;
  const edges = [];
  for (const j of jobs) {
    const to = pos.get(j.name);
    for (const n of j.needs || []) {
      const from = pos.get(n);
      if (!from) continue;
      const x1 = from.x + W; const y1 = from.y + H / 2; const x2 = to.x; const y2 = to.y + H / 2;
      const mx = (x1 + x2) / 2;
      edges.push(`<path class="edge" d="M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2 - 6},${y2}"/>`
        + `<path class="arrow" d="M${x2 - 6},${y2 - 4} L${x2},${y2} L${x2 - 6},${y2 + 4} Z"/>`);
    }
  }
  const boxes = jobs.map((j) => {
    const { x, y } = pos.get(j.name);
    const state = /^[a-z_]+$/.test(j.state) ? j.state : 'unknown';
    const matrix = Object.entries(j.matrix || {}).map(([k, v]) => `${k}=${v}`).join(' ');
    const box = `<rect class="job-box state-${state}" x="${x}" y="${y}" width="${W}" height="${H}" rx="6"/>`
      + `<text class="job-name" x="${x + 10}" y="${y + 20}">${esc(clip(j.name, 24))}</text>`
      + `<text class="job-sub" x="${x + 10}" y="${y + 38}">${esc(clip(`${state.replace('_', ' ')}${matrix ? ` · ${matrix}` : ''}`, 30))}</text>`
      + `<title>${esc(j.name)}: ${esc(state)}${j.reason ? `, ${esc(j.reason)}` : ''}${j.when ? ` (when ${esc(j.when)})` : ''}</title>`;
    const g = `<g class="job" data-job="${esc(j.name)}" data-state="${state}">${box}</g>`;
    return j.build_id ? `<a href="#/builds/${esc(encodeURIComponent(j.build_id))}">${g}</a>` : g;
  });
  return `<svg class="pipeline-graph" id="pipeline-graph" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="jobs of this run">${edges.join('')}${boxes.join('')}</svg>`;
}

function jobsTable(jobs) {
  return html`<table class="jobs"><thead><tr><th>Job</th><th>State</th><th>Needs</th><th>Matrix</th><th>Build</th><th>When</th><th>Reason</th></tr></thead>
    <tbody>${jobs.map((j) => html`<tr><td>${j.name}</td><td>${runState(j.state)}</td><td>${(j.needs || []).join(', ') || '-'}</td>
      <td>${Object.entries(j.matrix || {}).map(([k, v]) => `${k}=${v}`).join(', ') || '-'}</td>
      <td>${j.build_id ? html`<a class="mono" href="#/builds/${j.build_id}">${j.build_id}</a>` : '-'}</td><td>${j.when || '-'}</td><td class="small">${j.reason || ''}</td></tr>`)}</tbody></table>`.toString();
}

function clip(s, n) {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}
