/**
 * The login page: paste an API token (or open `login.html#token=qm_...`, which never reaches a server log:
 * fragments are not sent) and the server checks it once and sets an HttpOnly, SameSite=Strict session cookie.
 * The token is dropped from the page afterwards; the browser goes back to `?next=` (same-origin paths only).
 */

import './pages.css';
import { Api, apiBase, safeNext } from './api';
import { byId, renderNav, setStatus } from './dom';

const api = new Api(apiBase(location.search, location.origin));
const form = byId<HTMLFormElement>('login-form');
const input = byId<HTMLInputElement>('login-token');
const status = byId('login-status');

async function login(token: string): Promise<void> {
  setStatus(status, 'checking the token…', 'busy');
  try {
    const me = await api.login(token.trim());
    input.value = '';
    setStatus(status, `logged in as ${me.user} (${me.role}) in ${me.workspace}`, 'ok');
    location.replace(safeNext(location.search));
  } catch (err) {
    setStatus(status, err instanceof Error ? err.message : String(err), 'error');
  }
}

renderNav(byId('nav'), 'login');
form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  void login(input.value);
});
const fromHash = new URLSearchParams(location.hash.slice(1)).get('token');
if (fromHash) {
  history.replaceState(null, '', location.pathname + location.search); // drop the token from the address bar
  void login(fromHash);
}
