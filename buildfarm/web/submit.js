// #/submit: the same fields as `buildfarm submit`. The farm validates; each message from its
// 400/422 answer (`details: [{field, message}]`) is shown next to the field it names.
// #/submit?from=ID starts from an earlier build's spec.

import { api, html, raw, setTitle, ApiError } from './util.js';
import { can, session } from './session.js';

const DEFAULT_IMAGE = 'buildfarm/builder:latest';

export function render(root, params) {
  setTitle('Submit a build');
  const field = (name, label, input, help = '') => html`
    <div class="field" data-field="${name}">
      <label for="f-${name.replace('.', '-')}">${label}</label>
      ${input}
      ${help ? html`<div class="help">${help}</div>` : ''}
      <div class="field-error" role="alert"></div>
    </div>`;
  const readOnly = !can('submitter');
  root.innerHTML = `${html`
    <h1>Submit a build</h1>
    ${readOnly ? html`<p class="banner warn" id="submit-readonly">You are signed in as ${session.user}, a ${session.role}: submitting needs the submitter role.</p>` : ''}
    <form id="submit-form" class="submit-form" novalidate autocomplete="off">
      <div class="banner error" id="form-error" role="alert" hidden></div>
      <fieldset class="what"><legend>What</legend>
        ${field('repo', 'Repository', raw('<input id="f-repo" name="repo" required placeholder="git://host/app.git" spellcheck="false">'), 'git URL (git://, http(s)://, ssh://, file://)')}
        <div class="row">
          ${field('ref', 'Ref', raw('<input id="f-ref" name="ref" placeholder="main" spellcheck="false">'), 'branch or tag; default branch if empty')}
          ${field('commit', 'Commit', raw('<input id="f-commit" name="commit" placeholder="SHA, 7-40 hex digits" spellcheck="false">'))}
        </div>
        ${field('image', 'Image', raw(`<input id="f-image" name="image" required value="${DEFAULT_IMAGE}" spellcheck="false">`), 'a Docker image with git and python3')}
        <div class="field" data-field="run">
          <span class="label">Run</span>
          <div class="choices">
            <label class="inline"><input type="radio" name="mode" value="steps" checked> shell steps</label>
            <label class="inline"><input type="radio" name="mode" value="command"> one command</label>
          </div>
          <div class="field-error" role="alert"></div>
        </div>
        ${field('steps', 'Steps', raw('<textarea id="f-steps" name="steps" rows="4" placeholder="make -j2\nmake test" spellcheck="false"></textarea>'), 'one shell line each, run in order with sh -e')}
        ${field('command', 'Command', raw('<input id="f-command" name="command" placeholder="make test" spellcheck="false">'), 'an argv, split like a shell line (quotes allowed)')}
        ${field('env', 'Environment', raw('<textarea id="f-env" name="env" rows="2" placeholder="KEY=VALUE, one per line" spellcheck="false"></textarea>'))}
        ${field('secrets', 'Secrets', raw('<input id="f-secrets" name="secrets" placeholder="NAME, NAME" spellcheck="false">'), 'names of secrets stored on the farm, given as environment variables')}
      </fieldset>
      <div class="col">
      <fieldset><legend>Where and how long</legend>
        <div class="row" data-field="resources">
          ${field('resources.cpus', 'CPUs', raw('<input id="f-resources-cpus" name="cpus" type="number" step="any" value="1">'))}
          ${field('resources.mem', 'Memory (MB)', raw('<input id="f-resources-mem" name="mem" type="number" step="1" value="1024">'))}
          ${field('resources.disk', 'Disk (MB)', raw('<input id="f-resources-disk" name="disk" type="number" step="1" value="0">'))}
        </div>
        <div class="field-error group-error" data-error-for="resources" role="alert"></div>
        ${field('constraints', 'Constraints', raw('<input id="f-constraints" name="constraints" placeholder="arch:x86_64, os!=el7" spellcheck="false">'), 'agent attributes: ATTR:VALUE or ATTR!=VALUE, comma-separated')}
        <div class="row">
          ${field('timeout', 'Timeout (s)', raw('<input id="f-timeout" name="timeout" type="number" step="1" value="3600">'))}
          ${field('priority', 'Priority', raw('<select id="f-priority" name="priority"><option>high</option><option selected>normal</option><option>low</option></select>'))}
          ${field('retries', 'Retries', raw('<input id="f-retries" name="retries" type="number" step="1" value="0">'), 'after infrastructure failures')}
          ${field('team', 'Team', raw('<select id="f-team" name="team"><option value="">my team</option></select>'), 'the team it is charged to')}
        </div>
        ${field('wait_for_capacity', 'Wait for capacity', raw('<label class="inline"><input id="f-wait_for_capacity" name="wait_for_capacity" type="checkbox"> queue it even if no agent can run it now</label>'))}
      </fieldset>
      <fieldset><legend>Keep</legend>
        ${field('artifacts', 'Artifacts', raw('<textarea id="f-artifacts" name="artifacts" rows="2" placeholder="dist/*.tar.gz, one glob per line" spellcheck="false"></textarea>'), 'globs relative to the checkout')}
      </fieldset>
      </div>
      <div class="form-actions">
        <button type="submit" class="primary" id="submit-button" ${raw(readOnly ? 'disabled' : '')}>Submit build</button>
        <span class="muted" id="submit-status"></span>
      </div>
    </form>`}`;

  const form = root.querySelector('#submit-form');
  api('/api/v1/teams').then(({ teams }) => {  // the farm's teams, to pick from (a farm may have none)
    const select = form.querySelector('#f-team');
    for (const t of teams) if (![...select.options].some((o) => o.value === t.name)) select.add(new Option(t.name, t.name));
  }).catch(() => {});
  const mode = () => form.querySelector('input[name=mode]:checked').value;
  const showMode = () => {
    form.querySelector('[data-field=steps]').hidden = mode() !== 'steps';
    form.querySelector('[data-field=command]').hidden = mode() !== 'command';
  };
  for (const r of form.querySelectorAll('input[name=mode]')) r.onchange = showMode;
  showMode();
  if (params.get('from')) prefill(form, params.get('from')).then(showMode);

  form.onsubmit = async (ev) => {
    ev.preventDefault();
    clearErrors(form);
    let spec;
    try {
      spec = readSpec(form, mode());
    } catch (e) {
      if (e.field) return showErrors(form, [{ field: e.field, message: e.message }], e.message);
      throw e;
    }
    const button = form.querySelector('#submit-button');
    button.disabled = true;
    form.querySelector('#submit-status').textContent = 'submitting… (the farm checks the repository and ref)';
    try {
      const b = await api('/api/v1/builds', { method: 'POST', body: spec });
      location.hash = `#/builds/${b.id}`;
    } catch (e) {
      form.querySelector('#submit-status').textContent = '';
      button.disabled = false;
      if (e instanceof ApiError) showErrors(form, e.details, e.message);
      else throw e;
    }
  };
}

class FieldError extends Error {
  constructor(field, message) { super(message); this.field = field; }
}

const lines = (s) => s.split(/\r?\n/).map((x) => x.trim()).filter(Boolean);
const items = (s) => s.split(/[,\n]/).map((x) => x.trim()).filter(Boolean);

function number(form, name, field) {
  const v = form.elements[name].value.trim();
  if (v === '') return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new FieldError(field, `${v} is not a number`);
  return n;
}

function readSpec(form, mode) {
  const el = form.elements;
  const text = (name) => el[name].value.trim() || null;
  const env = {};
  for (const line of lines(el.env.value)) {
    const i = line.indexOf('=');
    if (i < 1) throw new FieldError('env', `${line}: write KEY=VALUE`);
    env[line.slice(0, i)] = line.slice(i + 1);
  }
  const spec = {
    repo: el.repo.value.trim(),
    ref: text('ref'),
    commit: text('commit'),
    image: el.image.value.trim(),
    env,
    resources: {},
    constraints: items(el.constraints.value),
    artifacts: lines(el.artifacts.value),
    priority: el.priority.value,
    secrets: items(el.secrets.value),
    wait_for_capacity: el.wait_for_capacity.checked,
    team: el.team.value || null,
    trigger: { kind: 'api', detail: { via: 'dashboard' } },
  };
  if (mode === 'steps') spec.steps = lines(el.steps.value);
  else spec.command = shellSplit(el.command.value);
  for (const [name, key] of [['cpus', 'cpus'], ['mem', 'mem'], ['disk', 'disk']]) {
    const v = number(form, name, `resources.${key}`);
    if (v !== undefined) spec.resources[key] = v;
  }
  for (const name of ['timeout', 'retries']) {
    const v = number(form, name, name);
    if (v !== undefined) spec[name] = v;
  }
  if (!spec.secrets.length) delete spec.secrets; // a farm without secrets support would refuse the field
  return spec;
}

// Split a command line into an argv: whitespace separates, '…' and "…" quote, \ escapes.
export function shellSplit(s) {
  const out = [];
  let cur = null;
  let quote = null;
  for (let i = 0; i < s.length; i += 1) {
    const c = s[i];
    if (quote) {
      if (c === quote) quote = null;
      else if (c === '\\' && quote === '"' && i + 1 < s.length) cur += s[++i];
      else cur += c;
    } else if (c === "'" || c === '"') { quote = c; cur = cur ?? ''; }
    else if (c === '\\' && i + 1 < s.length) cur = (cur ?? '') + s[++i];
    else if (/\s/.test(c)) { if (cur !== null) out.push(cur); cur = null; }
    else cur = (cur ?? '') + c;
  }
  if (quote) throw new FieldError('command', `unclosed ${quote} quote`);
  if (cur !== null) out.push(cur);
  return out;
}

function clearErrors(form) {
  for (const f of form.querySelectorAll('.field.invalid')) f.classList.remove('invalid');
  for (const e of form.querySelectorAll('.field-error')) e.textContent = '';
  for (const i of form.querySelectorAll('[aria-invalid]')) i.removeAttribute('aria-invalid');
  form.querySelector('#form-error').hidden = true;
}

// Put each {field, message} next to its field: the exact name ("resources.cpus"), else its
// nearest parent ("env.FOO" -> "env", "constraints.0" -> "constraints"); the rest goes on top.
function showErrors(form, details, summary) {
  const unplaced = [];
  for (const d of details || []) {
    const target = findField(form, d.field || '', d.message || '');
    if (!target) { unplaced.push(d); continue; }
    const err = target.matches('[data-field=resources]')
      ? form.querySelector('[data-error-for=resources]') : target.querySelector(':scope > .field-error');
    err.textContent = err.textContent ? `${err.textContent}; ${d.message}` : d.message;
    target.classList.add('invalid');
    target.querySelector('input, textarea, select')?.setAttribute('aria-invalid', 'true');
  }
  const top = form.querySelector('#form-error');
  if (unplaced.length || !(details || []).length) {
    top.hidden = false;
    top.textContent = unplaced.length ? unplaced.map((d) => `${d.field}: ${d.message}`).join('; ') : summary;
  }
  const first = form.querySelector('.field.invalid, #form-error:not([hidden])');
  first?.scrollIntoView({ block: 'center' });
  first?.querySelector('input, textarea, select')?.focus();
}

function findField(form, name, message) {
  if (name === 'body' || name === 'spec' || name === '') {
    return /command|steps/.test(message) ? form.querySelector('[data-field=run]') : null;
  }
  const parts = name.split('.');
  while (parts.length) {
    const el = form.querySelector(`[data-field="${CSS.escape(parts.join('.'))}"]`);
    if (el && !el.hidden) return el;
    if (el && el.hidden) return form.querySelector('[data-field=run]');
    parts.pop();
  }
  return null;
}

async function prefill(form, id) {
  let b;
  try {
    b = await api(`/api/v1/builds/${encodeURIComponent(id)}`);
  } catch (e) {
    showErrors(form, [], `Could not load build ${id}: ${e.message}`);
    return;
  }
  const s = b.spec;
  const el = form.elements;
  el.repo.value = s.repo;
  el.ref.value = s.ref || '';
  el.commit.value = s.commit || '';
  el.image.value = s.image;
  if (s.command) {
    form.querySelector('input[name=mode][value=command]').checked = true;
    el.command.value = s.command.map((a) => (/^[\w./=:,+@%-]+$/.test(a) ? a : `'${a.replace(/'/g, "'\\''")}'`)).join(' ');
  } else {
    el.steps.value = (s.steps || []).join('\n');
  }
  el.env.value = Object.entries(s.env || {}).map(([k, v]) => `${k}=${v}`).join('\n');
  el.secrets.value = (s.secrets || []).join(', ');
  el.cpus.value = s.resources.cpus;
  el.mem.value = s.resources.mem;
  el.disk.value = s.resources.disk;
  el.constraints.value = (s.constraints || []).join(', ');
  el.timeout.value = s.timeout;
  el.priority.value = s.priority;
  el.retries.value = s.retries;
  el.wait_for_capacity.checked = Boolean(s.wait_for_capacity);
  if (s.team && ![...el.team.options].some((o) => o.value === s.team)) el.team.add(new Option(s.team, s.team));
  el.team.value = s.team || '';
  el.artifacts.value = (s.artifacts || []).join('\n');
}
