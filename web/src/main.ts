/**
 * Entry point: the stream viewer. `?serving=<alias|serving_id>` picks the stream (WebSocket `/v1/stream` on
 * this page's host, or `&stream=ws://host:port`); `date`, `start`, `end`, `speed` are passed on as replay
 * parameters; `field=` and `mode=heatmap|candle` preset the view. Any failure shows in the error panel.
 */

import './styles.css';
import { showError, ViewerApp } from './viewer/app';
import { parseViewerParams } from './viewer/params';

const root = document.querySelector<HTMLElement>('#app')!;

window.addEventListener('error', (e) => {
  const msg = String(e.message ?? e);
  if (/^ResizeObserver loop/.test(msg)) return; // benign browser notice, not a failure
  showError(root, 'Viewer error', msg);
});
window.addEventListener('unhandledrejection', (e) => showError(root, 'Viewer error', String(e.reason)));

try {
  const params = parseViewerParams(window.location.search);
  new ViewerApp(root, params).start();
} catch (e) {
  const state = root.querySelector<HTMLElement>('#conn-state');
  if (state) {
    state.textContent = 'error';
    state.dataset.state = 'error';
  }
  showError(root, 'Cannot open the viewer', (e as Error).message);
}
