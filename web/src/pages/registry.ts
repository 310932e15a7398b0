/**
 * The serving registry page: aliases (activate / roll back behind a confirmation that asks for a reason),
 * the selected alias's audit history, published versions and a side-by-side diff of two of them.
 * Decisions live in registry-model.ts and diff.ts; this module wires them to the DOM and the API.
 */

import './pages.css';
import { Api, ApiError, apiBase, type AliasRecord, type PublishedVersion, type VersionSummary } from './api';
import { diffCounts, diffRows } from './diff';
import { byId, h, renderNav, setStatus } from './dom';
import { formatIso } from './format';
import { activationChoices, changeStatus, checkConfirm, modelOf, newestFirst, sourceRun, type ChangeKind } from './registry-model';

const api = new Api(apiBase(location.search, location.origin));
const status = byId<HTMLParagraphElement>('status');
const dialog = byId<HTMLDialogElement>('confirm');
const form = byId<HTMLFormElement>('confirm-form');
const reasonEl = byId<HTMLTextAreaElement>('confirm-reason');
const actorEl = byId<HTMLInputElement>('confirm-actor');
const versionEl = byId<HTMLSelectElement>('confirm-version');
const okBtn = byId<HTMLButtonElement>('confirm-ok');
const confirmError = byId<HTMLParagraphElement>('confirm-error');

let versions: VersionSummary[] = [];
let aliases: AliasRecord[] = [];
let selectedAlias: string | null = null;
let pending: { kind: ChangeKind; alias: string; expected: string } | null = null;
const details = new Map<string, PublishedVersion | Error>();

function message(err: unknown): string {
  if (err instanceof ApiError) return err.message;
  return err instanceof Error ? err.message || err.name : String(err) || 'unknown error';
}

function renderAliases(): void {
  const body = byId<HTMLTableSectionElement>('aliases');
  if (!aliases.length) {
    body.replaceChildren(h('tr', {}, h('td', { colspan: 6, class: 'empty' }, 'no aliases yet')));
    return;
  }
  body.replaceChildren(...aliases.map((a) => {
    const activate = h('button', { type: 'button', 'data-testid': 'activate' }, 'Activate…');
    const rollback = h('button', { type: 'button', 'data-testid': 'rollback' }, 'Roll back');
    activate.addEventListener('click', (ev) => { ev.stopPropagation(); openConfirm('activate', a); });
    rollback.addEventListener('click', (ev) => { ev.stopPropagation(); openConfirm('rollback', a); });
    const row = h('tr', { 'data-testid': 'alias-row', 'data-alias': a.name, class: a.name === selectedAlias ? 'selected' : null, tabindex: 0 },
      h('td', {}, a.name),
      h('td', { 'data-testid': 'alias-version', class: 'mono' }, a.version_id),
      h('td', {}, String(a.revision)),
      h('td', {}, formatIso(a.updated_at)),
      h('td', {}, a.updated_by),
      h('td', { class: 'actions' }, activate, ' ', rollback));
    row.addEventListener('click', () => void selectAlias(a.name));
    row.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') void selectAlias(a.name); });
    return row;
  }));
}

async function selectAlias(name: string): Promise<void> {
  selectedAlias = name;
  renderAliases();
  byId('history-h').textContent = `History of ${name}`;
  const body = byId<HTMLTableSectionElement>('history');
  try {
    const events = newestFirst(await api.history(name));
    body.replaceChildren(...events.map((e) => h('tr', { 'data-testid': 'history-row' },
      h('td', {}, String(e.id)), h('td', {}, formatIso(e.at)), h('td', {}, e.action),
      h('td', { class: 'mono' }, e.from_version ?? '—'), h('td', { class: 'mono' }, e.to_version),
      h('td', {}, e.actor), h('td', { class: 'wrap' }, e.reason))));
  } catch (err) {
    body.replaceChildren(h('tr', {}, h('td', { colspan: 7, class: 'empty' }, `history unavailable: ${message(err)}`)));
  }
}

function detailCell(id: string, pick: (v: PublishedVersion) => string): string {
  const d = details.get(id);
  if (d === undefined) return '…';
  return d instanceof Error ? '?' : pick(d);
}

function renderVersions(): void {
  const body = byId<HTMLTableSectionElement>('versions');
  const rows = [...versions].reverse(); // newest first
  const [b, a] = [rows[0]?.version_id, rows[1]?.version_id ?? rows[0]?.version_id];
  const checked = (name: string, id: string, dflt: string | undefined) => {
    const prev = document.querySelector<HTMLInputElement>(`input[name="${name}"]:checked`)?.value;
    return (prev && versions.some((v) => v.version_id === prev) ? prev : dflt) === id;
  };
  body.replaceChildren(...rows.map((v) => h('tr', { 'data-testid': 'version-row', 'data-version': v.version_id },
    h('td', {}, h('input', { type: 'radio', name: 'diff-a', value: v.version_id, checked: checked('diff-a', v.version_id, a), 'aria-label': `A: ${v.version_id}` })),
    h('td', {}, h('input', { type: 'radio', name: 'diff-b', value: v.version_id, checked: checked('diff-b', v.version_id, b), 'aria-label': `B: ${v.version_id}` })),
    h('td', { class: 'mono' }, v.version_id),
    h('td', {}, v.serving_name),
    h('td', {}, detailCell(v.version_id, modelOf)),
    h('td', {}, formatIso(v.created_at)),
    h('td', {}, v.created_by),
    h('td', { class: 'mono wrap' }, detailCell(v.version_id, sourceRun)),
    h('td', {}, v.aliases.join(', ')))));
  if (!rows.length) body.replaceChildren(h('tr', {}, h('td', { colspan: 9, class: 'empty' }, 'no published versions')));
}

async function loadDetails(): Promise<void> {
  const todo = versions.map((v) => v.version_id).filter((id) => !details.has(id));
  for (let i = 0; i < todo.length; i += 8) { // a few at a time: one request per version
    await Promise.all(todo.slice(i, i + 8).map(async (id) => {
      try {
        details.set(id, await api.version(id));
      } catch (err) {
        details.set(id, err instanceof Error ? err : new Error(String(err)));
      }
    }));
    renderVersions();
  }
}

async function reload(): Promise<void> {
  [aliases, versions] = await Promise.all([api.aliases(), api.versions()]);
  if (selectedAlias === null || !aliases.some((a) => a.name === selectedAlias)) selectedAlias = aliases[0]?.name ?? null;
  renderAliases();
  renderVersions();
  if (selectedAlias) await selectAlias(selectedAlias);
  void loadDetails();
}

async function showDiff(): Promise<void> {
  const out = byId<HTMLDivElement>('diff');
  const a = document.querySelector<HTMLInputElement>('input[name="diff-a"]:checked')?.value;
  const b = document.querySelector<HTMLInputElement>('input[name="diff-b"]:checked')?.value;
  if (!a || !b) {
    out.replaceChildren(h('p', { class: 'status', 'data-tone': 'error' }, 'pick a version A and a version B'));
    return;
  }
  out.replaceChildren(h('p', { class: 'status', 'data-tone': 'busy' }, 'comparing…'));
  try {
    const d = await api.diff(a, b);
    const rows = diffRows(d);
    out.replaceChildren(
      h('p', {}, `${d.version_a} ↔ ${d.version_b}: ${diffCounts(d)}`),
      rows.length
        ? h('table', { class: 'grid diff', 'data-testid': 'diff-table' },
          h('thead', {}, h('tr', {}, h('th', {}, 'key'), h('th', {}, `A · ${d.version_a}`), h('th', {}, `B · ${d.version_b}`))),
          h('tbody', {}, ...rows.map((r) => h('tr', { class: `diff-${r.kind}`, 'data-kind': r.kind, 'data-testid': 'diff-row' },
            h('td', { class: 'mono' }, r.key), h('td', { class: 'mono wrap' }, r.a), h('td', { class: 'mono wrap' }, r.b)))))
        : h('p', {}, 'identical runtime snapshots'));
  } catch (err) {
    out.replaceChildren(h('p', { class: 'status', 'data-tone': 'error' }, message(err)));
  }
}

function openConfirm(kind: ChangeKind, alias: AliasRecord): void {
  pending = { kind, alias: alias.name, expected: alias.version_id };
  byId('confirm-title').textContent = kind === 'activate' ? `Activate a version on ${alias.name}` : `Roll back ${alias.name}`;
  byId('confirm-text').textContent = kind === 'activate'
    ? `${alias.name} points at ${alias.version_id}. Choose the version it should serve.`
    : `${alias.name} points at ${alias.version_id}; it goes back to the version active before.`;
  byId('confirm-version-wrap').hidden = kind !== 'activate';
  versionEl.replaceChildren(...activationChoices(versions, alias.version_id).map((c) => h('option', { value: c.id }, c.label)));
  reasonEl.value = '';
  confirmError.textContent = '';
  okBtn.disabled = false;
  dialog.showModal();
  reasonEl.focus();
}

async function submitConfirm(): Promise<void> {
  if (!pending) return;
  const checked = checkConfirm({ kind: pending.kind, reason: reasonEl.value, actor: actorEl.value, versionId: versionEl.value });
  if (typeof checked === 'string') {
    confirmError.textContent = checked;
    return;
  }
  const { alias, expected } = pending;
  okBtn.disabled = true;
  setStatus(status, `${checked.kind === 'activate' ? 'activating' : 'rolling back'} ${alias}…`, 'busy');
  try {
    const change = checked.kind === 'activate'
      ? await api.activate(alias, checked.versionId!, checked.reason, checked.actor, expected)
      : await api.rollback(alias, checked.reason, checked.actor, expected);
    dialog.close();
    pending = null;
    selectedAlias = alias;
    const text = changeStatus(change);
    setStatus(status, text, 'ok');
    try {
      await reload();
    } catch (err) {
      setStatus(status, `${text}; reloading failed: ${message(err)}`, 'error');
    }
  } catch (err) {
    dialog.close();
    pending = null;
    setStatus(status, `${alias}: refused: ${message(err)}`, 'error');
  } finally {
    okBtn.disabled = false;
  }
}

form.addEventListener('submit', (ev) => {
  ev.preventDefault();
  void submitConfirm();
});
byId('confirm-cancel').addEventListener('click', () => {
  pending = null;
  dialog.close();
});
dialog.addEventListener('close', () => { pending = null; });
byId('diff-btn').addEventListener('click', () => void showDiff());

renderNav(byId('nav'), 'registry');
setStatus(status, 'loading…', 'busy');
reload().then(
  () => { if (status.dataset['tone'] === 'busy') setStatus(status, `${aliases.length} alias(es), ${versions.length} version(s)`, ''); },
  (err: unknown) => setStatus(status, message(err), 'error'),
);
