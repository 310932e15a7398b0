/** Shaping a `POST /v1/serving/diff` answer into the side-by-side table of the registry page. DOM-free. */

import type { SnapshotDiff } from './api';
import { formatValue } from './format';

export type DiffKind = 'added' | 'removed' | 'changed';

export interface DiffRow {
  key: string;
  kind: DiffKind;
  /** the value in version A ('—' when absent there) */
  a: string;
  /** the value in version B ('—' when absent there) */
  b: string;
}

/** One row per differing key, sorted by key: added keys exist only in B, removed only in A. */
export function diffRows(d: SnapshotDiff): DiffRow[] {
  const rows: DiffRow[] = [
    ...Object.entries(d.added).map(([key, v]) => ({ key, kind: 'added' as const, a: '—', b: formatValue(v) })),
    ...Object.entries(d.removed).map(([key, v]) => ({ key, kind: 'removed' as const, a: formatValue(v), b: '—' })),
    ...Object.entries(d.changed).map(([key, c]) => ({ key, kind: 'changed' as const, a: formatValue(c.a), b: formatValue(c.b) })),
  ];
  return rows.sort((x, y) => (x.key < y.key ? -1 : x.key > y.key ? 1 : 0));
}

/** Counts line above the table, e.g. "3 changed, 1 added, 0 removed, 41 unchanged". */
export function diffCounts(d: SnapshotDiff): string {
  const n = (o: object) => Object.keys(o).length;
  return `${n(d.changed)} changed, ${n(d.added)} added, ${n(d.removed)} removed, ${d.unchanged_count} unchanged`;
}
