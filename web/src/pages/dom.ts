/** Small DOM helpers for the pages (no framework): element creation, the shared top navigation. */

type Attrs = Record<string, string | number | boolean | null | undefined>;
type Child = Node | string | null | undefined | false;

/** `h('td', {'data-testid': 'x'}, 'text')`: attributes set with setAttribute (false/null/undefined omitted). */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    el.append(typeof c === 'string' ? document.createTextNode(c) : c);
  }
  return el;
}

export function byId<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`page is missing #${id}`);
  return el as T;
}

const PAGES = [
  { href: './index.html', label: 'viewer', key: 'viewer' },
  { href: './registry.html', label: 'serving registry', key: 'registry' },
  { href: './experiments.html', label: 'experiments', key: 'experiments' },
  { href: './studio.html', label: 'model studio', key: 'studio' },
] as const;

/** The top navigation shared by the pages, the current one marked with aria-current. */
export function renderNav(host: HTMLElement, current: 'viewer' | 'registry' | 'experiments' | 'studio' | 'login'): void {
  const links = PAGES.map((p) => h('a', { href: p.href, 'aria-current': p.key === current ? 'page' : null, 'data-testid': `nav-${p.key}` }, p.label));
  host.replaceChildren(h('span', { class: 'brand' }, 'qMachina'), ...links);
}

/** A status element's text and tone ('ok' | 'error' | 'busy' | ''), shown through data-tone in CSS. */
export function setStatus(el: HTMLElement, text: string, tone: 'ok' | 'error' | 'busy' | '' = ''): void {
  el.textContent = text;
  el.dataset['tone'] = tone;
}
