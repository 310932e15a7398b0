/**
 * The browser session: pages talk to `/v1` with the HttpOnly cookie that `/auth/login` set (same origin, so
 * `fetch` sends it; no token is ever kept in JavaScript or storage). A 401 sends the page to the login page,
 * which brings it back afterwards. `showWho` adds "user · role · workspace · log out" to a page's nav.
 */

import { Api, apiBase, loginHref } from './api';
import { h } from './dom';

/** The stream's close code and the REST status of a missing or expired session. */
export const UNAUTHORIZED = 4401;

export function toLogin(): void {
  location.assign(loginHref(location.pathname, location.search));
}

/** The REST client of a page: the page's origin (or `?api=`), redirecting to the login page on a 401. */
export function pageApi(): Api {
  return new Api(apiBase(location.search, location.origin), undefined, toLogin);
}

/** Append who is logged in and a log-out button to `nav` (nothing when the request fails: the page's own
 * calls report and redirect). */
export async function showWho(nav: HTMLElement, api: Api = pageApi()): Promise<void> {
  try {
    const me = await api.me();
    const out = h('button', { type: 'button', 'data-testid': 'logout' }, 'log out');
    out.addEventListener('click', () => {
      void api.logout().finally(() => location.assign('./login.html'));
    });
    nav.append(h('span', { class: 'who', 'data-testid': 'who' }, `${me.user} · ${me.role} · ${me.workspace}`), out);
  } catch {
    /* reported by the page */
  }
}
