// The dashboard's entry point: sign-in (token box or a one-time `/#token=...` link), the header,
// and hash routing to the views: #/builds, #/builds/ID, #/cluster, #/submit, #/pipelines, #/pipelines/RUN, #/teams.

import { html, stopAll, ApiError } from './util.js';
import { session, whoami, signIn, signOut } from './session.js';
import * as builds from './builds.js';
import * as build from './build.js';
import * as cluster from './cluster.js';
import * as submit from './submit.js';
import * as pipelines from './pipelines.js';
import * as teams from './teams.js';

const view = document.getElementById('view');

const ROUTES = [
  [/^builds\/([A-Za-z0-9_-]+)$/, (m) => build.render(view, m[1]), 'builds'],
  [/^builds$/, (m, q) => builds.render(view, q), 'builds'],
  [/^cluster$/, () => cluster.render(view), 'cluster'],
  [/^submit$/, (m, q) => submit.render(view, q), 'submit'],
  [/^pipelines\/([A-Za-z0-9_.-]+)$/, (m) => pipelines.renderRun(view, m[1]), 'pipelines'],
  [/^pipelines$/, () => pipelines.renderList(view), 'pipelines'],
  [/^teams$/, () => teams.render(view), 'teams'],
];

function route() {
  stopAll();
  if (!session.user) {
    renderSignIn();
    return;
  }
  const hash = location.hash.replace(/^#\/?/, '');
  const [path, qs] = hash.split('?', 2);
  const q = new URLSearchParams(qs || '');
  for (const [re, fn, nav] of ROUTES) {
    const m = (path || 'builds').match(re);
    if (m) {
      markNav(nav);
      view.innerHTML = '';
      fn(m, q);
      return;
    }
  }
  markNav('');
  view.innerHTML = `${html`<h1>Not found</h1><p>There is no page <code>#/${path}</code>.</p>`}
    <p><a href="#/builds">Back to the builds</a></p>`;
}

function markNav(name) {
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.nav === name);
}

function renderWho() {
  const who = document.getElementById('who');
  if (!session.user) {
    who.innerHTML = '<span class="muted">not signed in</span>';
    return;
  }
  if (session.open) {
    who.innerHTML = '<span class="muted" title="this farm has no access control">open farm</span>';
    return;
  }
  who.innerHTML = `${html`<span class="user" id="who-user">${session.user}</span>
    <span class="role role-${session.role}" id="who-role">${session.role}</span>`}
    <button type="button" class="link" id="signout">Sign out</button>`;
  document.getElementById('signout').onclick = async () => {
    await signOut();
    renderWho();
    route();
  };
}

function renderSignIn(message = '') {
  markNav('');
  view.innerHTML = `${html`
    <section class="signin">
      <h1>Sign in</h1>
      <p>Paste an API token. An admin makes one with
        <code>buildfarm token create NAME --role viewer|submitter|admin</code>;
        the farm's first admin token is in <code>DATA_DIR/admin.token</code>.</p>
      <form id="signin-form" autocomplete="off">
        <label for="token">Token</label>
        <input id="token" name="token" type="password" required spellcheck="false" autofocus>
        <button type="submit" class="primary">Sign in</button>
        <div class="field-error" id="signin-error" role="alert">${message}</div>
      </form>
    </section>`}`;
  document.getElementById('signin-form').onsubmit = async (ev) => {
    ev.preventDefault();
    const err = document.getElementById('signin-error');
    err.textContent = '';
    try {
      await signIn(document.getElementById('token').value);
    } catch (e) {
      err.textContent = e instanceof ApiError ? e.message : String(e);
      return;
    }
    if (!session.user) {
      err.textContent = 'the farm did not accept this token';
      return;
    }
    renderWho();
    route();
  };
}

// A one-time login link `/#token=...`: trade it for the session cookie, then drop it from the URL
// (and from the history) so it is neither bookmarked nor shown.
async function consumeLoginLink() {
  const params = new URLSearchParams(location.hash.replace(/^#\/?/, ''));
  const token = params.get('token');
  if (!token) return '';
  history.replaceState(null, '', `${location.pathname}${location.search}#/builds`);
  try {
    await signIn(token);
    return session.user ? '' : 'the farm did not accept the token in this link';
  } catch (e) {
    return `this login link did not work: ${e.message}`;
  }
}

async function start() {
  const problem = await consumeLoginLink();
  try {
    await whoami();
  } catch (e) {
    view.innerHTML = html`<p class="banner error">The farm did not answer: ${e.message}</p>`;
    return;
  }
  renderWho();
  window.addEventListener('hashchange', route);
  // A session that expired or was revoked while the page was open.
  window.addEventListener('bf-unauthorized', async () => {
    if (!session.user || session.open) return;
    await whoami().catch(() => {});
    if (!session.user) {
      stopAll();
      renderWho();
      renderSignIn('your session ended; sign in again');
    }
  });
  if (problem && !session.user) renderSignIn(problem);
  else route();
}

start();
