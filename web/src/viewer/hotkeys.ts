/**
 * The viewer's keyboard shortcuts: one table that drives both the key handler and the help overlay (so the
 * overlay cannot drift from what the keys do).
 */

export type Action =
  | 'pause' | 'follow' | 'reset' | 'next_field' | 'prev_field' | 'toggle_mode' | 'toggle_trades'
  | 'zoom_in' | 'zoom_out' | 'pan_back' | 'pan_forward' | 'price_up' | 'price_down' | 'help' | 'close';

export interface Hotkey {
  readonly keys: readonly string[];
  readonly action: Action;
  readonly help: string;
}

export const HOTKEYS: readonly Hotkey[] = [
  { keys: [' '], action: 'pause', help: 'pause / resume drawing (bins keep buffering)' },
  { keys: ['f'], action: 'follow', help: 'follow live (snap to the newest bin)' },
  { keys: ['r', '0'], action: 'reset', help: 'reset zoom (time and price) and follow live' },
  { keys: [']'], action: 'next_field', help: 'next colour field' },
  { keys: ['['], action: 'prev_field', help: 'previous colour field' },
  { keys: ['c'], action: 'toggle_mode', help: 'heatmap ⇄ candles' },
  { keys: ['t'], action: 'toggle_trades', help: 'show / hide trade bubbles' },
  { keys: ['+', '='], action: 'zoom_in', help: 'zoom time in (wheel: time, shift+wheel or wheel on the ladder: price)' },
  { keys: ['-', '_'], action: 'zoom_out', help: 'zoom time out' },
  { keys: ['ArrowLeft'], action: 'pan_back', help: 'pan back in time (drag the plot: time and price)' },
  { keys: ['ArrowRight'], action: 'pan_forward', help: 'pan forward in time' },
  { keys: ['ArrowUp'], action: 'price_up', help: 'pan the price axis up' },
  { keys: ['ArrowDown'], action: 'price_down', help: 'pan the price axis down' },
  { keys: ['?', 'h'], action: 'help', help: 'this help' },
  { keys: ['Escape'], action: 'close', help: 'close help / dialogs' },
];

const BY_KEY = new Map<string, Action>();
for (const h of HOTKEYS) for (const k of h.keys) BY_KEY.set(k.length === 1 ? k.toLowerCase() : k, h.action);

/** The action of a key event, or null (modified keys and keys typed into form fields are not shortcuts). */
export function actionFor(e: { key: string; ctrlKey?: boolean; metaKey?: boolean; altKey?: boolean }, targetTag = ''): Action | null {
  if (e.ctrlKey || e.metaKey || e.altKey) return null;
  if (/^(INPUT|SELECT|TEXTAREA)$/.test(targetTag) && e.key !== 'Escape') return null;
  if (targetTag === 'BUTTON' && e.key === ' ') return null; // space activates the focused button
  return BY_KEY.get(e.key.length === 1 ? e.key.toLowerCase() : e.key) ?? null;
}

/** Label of a key for the help overlay. */
export function keyLabel(k: string): string {
  return k === ' ' ? 'Space' : k.startsWith('Arrow') ? { ArrowLeft: '←', ArrowRight: '→', ArrowUp: '↑', ArrowDown: '↓' }[k]! : k === 'Escape' ? 'Esc' : k.toUpperCase();
}

/** Next field in `fields` after `current` (wrapping; `dir` −1 goes back). */
export function cycle(fields: readonly string[], current: string, dir: 1 | -1): string {
  if (!fields.length) return current;
  const i = fields.indexOf(current);
  return fields[(i < 0 ? 0 : i + dir + fields.length) % fields.length];
}
