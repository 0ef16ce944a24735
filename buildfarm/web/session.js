// Who is signed in. The token itself never stays in the page: POST /api/v1/session turns it into
// the HttpOnly cookie `bf_session`, which every later fetch sends (credentials: 'same-origin').

import { api, ApiError } from './util.js';

const RANK = { viewer: 1, submitter: 2, admin: 3 };

export const session = { user: null, role: null, open: false };

export function can(role) {
  return (RANK[session.role] || 0) >= RANK[role];
}

// Ask the farm who we are. A farm without access control (no /whoami) lets everyone do everything.
export async function whoami() {
  try {
    const me = await api('/api/v1/whoami');
    Object.assign(session, { user: me.user, role: me.role, open: false });
  } catch (e) {
    if (!(e instanceof ApiError)) throw e;
    if (e.status === 404) Object.assign(session, { user: 'anonymous', role: 'admin', open: true });
    else if (e.status === 401 || e.status === 403) Object.assign(session, { user: null, role: null, open: false });
    else throw e;
  }
  return session;
}

export async function signIn(token) {
  await api('/api/v1/session', { method: 'POST', body: { token: token.trim() } });
  return whoami();
}

export async function signOut() {
  try {
    await api('/api/v1/session', { method: 'DELETE' });
  } catch (e) {
    if (!(e instanceof ApiError) || e.status >= 500) throw e;
  }
  Object.assign(session, { user: null, role: null, open: false });
}
