/** The registry page's decisions, kept DOM-free: what a confirmation needs, what the status line says,
 * which versions an alias can be pointed at, what a version's source run is. */

import type { AliasChange, AliasEvent, PublishedVersion, VersionSummary } from './api';

export type ChangeKind = 'activate' | 'rollback';

export interface ConfirmInput {
  kind: ChangeKind;
  reason: string;
  /** the chosen version (activate only) */
  versionId?: string;
}

export interface ConfirmedChange {
  kind: ChangeKind;
  reason: string;
  versionId?: string;
}

const VERSION_ID_RE = /^sv_[0-9a-f]{16}$/;

/** A confirmation's fields checked as the server will (a non-blank reason, a version id to activate); the
 * actor is the caller's token, not a field. Returns the trimmed change or the message to show instead. */
export function checkConfirm(input: ConfirmInput): ConfirmedChange | string {
  const reason = input.reason.trim();
  if (!reason) return 'a reason is required: it is kept in the audit history';
  if (reason.length > 2000) return 'the reason is longer than 2000 characters';
  if (input.kind === 'activate') {
    const v = (input.versionId ?? '').trim();
    if (!VERSION_ID_RE.test(v)) return 'choose the version to activate';
    return { kind: 'activate', reason, versionId: v };
  }
  return { kind: 'rollback', reason };
}

/** The status line after a successful change: "live → sv_…", or that nothing changed. */
export function changeStatus(c: AliasChange): string {
  return c.changed ? `${c.alias} → ${c.version_id}` : `${c.alias} already → ${c.version_id} (no change)`;
}

/** Versions to offer when activating `alias`: newest first, the one it points at now last and marked. */
export function activationChoices(versions: VersionSummary[], current: string | null): { id: string; label: string }[] {
  const newest = [...versions].sort((a, b) => (a.created_at < b.created_at ? 1 : a.created_at > b.created_at ? -1 : 0));
  const others = newest.filter((v) => v.version_id !== current);
  const now = newest.filter((v) => v.version_id === current);
  return [
    ...others.map((v) => ({ id: v.version_id, label: `${v.version_id} · ${v.serving_name}` })),
    ...now.map((v) => ({ id: v.version_id, label: `${v.version_id} · ${v.serving_name} (current)` })),
  ];
}

/** The experiment run a version was promoted from (`experiment:run_id`), or its lineage kind ("register"). */
export function sourceRun(v: Pick<PublishedVersion, 'lineage'>): string {
  const runs = v.lineage.runs ?? [];
  if (!runs.length) return v.lineage.kind;
  const exp = v.lineage.experiment_name ? `${v.lineage.experiment_name}:` : '';
  return runs.map((r) => `${exp}${r.run_id}`).join(', ');
}

/** The model a version serves (`serving.model_id`; the spec's default when absent). */
export function modelOf(v: Pick<PublishedVersion, 'serving'>): string {
  const m = v.serving['model_id'];
  return typeof m === 'string' ? m : 'vacuum_pressure';
}

/** Audit events newest first (the API returns them oldest first). */
export function newestFirst(events: AliasEvent[]): AliasEvent[] {
  return [...events].sort((a, b) => b.id - a.id);
}
