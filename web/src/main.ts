/**
 * Entry point: the stream viewer. `?serving=<alias|serving_id>` picks the stream (WebSocket `/v1/stream` on
 * this page's host, or `&stream=ws://host:port`); `date`, `start`, `end`, `speed` are passed on as replay
 * parameters; `field=` and `mode=heatmap|candle` preset the view. Any failure shows in the error panel.
 */

import './styles.css';
import { pageApi } from './pages/session';
import { showError, ViewerApp } from './viewer/app';
import { parseViewerParams } from './viewer/params';

const root = document.querySelector<HTMLElement>('#app')!;

window.addEventListener('error', (e) => {
  const msg = String(e.message ?? e);
  if (/^ResizeObserver loop/.test(msg)) return; // benign browser notice, not a failure
  showError(root, 'Viewer error', msg);
});
window.addEventListener('unhandledrejection', (e) => showError(root, 'Viewer error', String(e.reason)));

/** Without `?serving=`, list the registry's aliases as links instead of failing (the pages link here bare). */
async function showChooser(): Promise<void> {
  const box = root.querySelector<HTMLElement>('#chooser')!;
  const list = root.querySelector<HTMLElement>('#chooser-list')!;
  const aliases = await pageApi().aliases();
  for (const a of aliases) {
    const li = document.createElement('li');
    const link = document.createElement('a');
    link.href = `?serving=${encodeURIComponent(a.name)}`;
    link.textContent = a.name;
    li.append(link, ` → ${a.version_id}`);
    list.append(li);
  }
  if (!aliases.length) list.textContent = 'no aliases in the registry yet (promote or register a serving version)';
  box.hidden = false;
}

try {
  if (!new URLSearchParams(window.location.search).has('serving')) {
    showChooser().catch((e) => showError(root, 'Cannot list serving aliases', (e as Error).message));
  } else {
    new ViewerApp(root, parseViewerParams(window.location.search)).start();
  }
} catch (e) {
  const state = root.querySelector<HTMLElement>('#conn-state');
  if (state) {
    state.textContent = 'error';
    state.dataset.state = 'error';
  }
  showError(root, 'Cannot open the viewer', (e as Error).message);
}
