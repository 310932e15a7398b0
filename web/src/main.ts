/**
 * Placeholder entry point until the viewer lands: with `?serving=<alias|serving_id>` (and optionally
 * `&stream=ws://host:8002`) it opens the stream, validates every message against the SPEC §7.2 contract
 * and runs the browser gold runtime, printing the latest bin. Not a UI; the heatmap viewer replaces it.
 */

import { createGoldRuntime, goldInput, StreamDecoder, streamUrl } from './stream';
import type { GoldFeatureRuntime } from './gold';

const status = document.querySelector<HTMLParagraphElement>('#status')!;
const log = document.querySelector<HTMLPreElement>('#log')!;
const params = new URLSearchParams(window.location.search);
const serving = params.get('serving');

if (serving) {
  const base = params.get('stream') ?? `ws://${window.location.hostname || 'localhost'}:8002`;
  const url = streamUrl(base, serving);
  const decoder = new StreamDecoder();
  let gold: GoldFeatureRuntime | null = null;
  const ws = new WebSocket(url);
  ws.binaryType = 'arraybuffer';
  status.textContent = `connecting to ${url}`;
  ws.onmessage = (msg: MessageEvent<string | ArrayBuffer>) => {
    try {
      const ev = decoder.push(msg.data);
      if (ev.kind === 'runtime_config') {
        status.textContent = `${ev.config.display_name ?? serving}: ${ev.config.grid_rows} rows, ${ev.config.cell_width_ms} ms bins`;
        try {
          gold = createGoldRuntime(ev.config);
        } catch (e) {
          log.textContent = `gold off: ${(e as Error).message}`;
        }
      } else if (ev.kind === 'bin') {
        const u = ev.bin.update;
        let line = `bin ${u.bin_seq} mid ${u.mid_price} valid ${u.book_valid}`;
        if (gold) {
          const g = gold.step(goldInput(ev.bin));
          const c = gold.radius;
          line += ` flow_score(k=0) ${g.flow_score[c].toFixed(4)} state ${g.flow_state_code[c]} ready ${gold.ready}`;
        }
        log.textContent = line;
      } else if (ev.kind === 'server_error') {
        status.textContent = `server error: ${ev.message}`;
      }
    } catch (e) {
      status.textContent = `stream contract error: ${(e as Error).message}`;
      ws.close();
    }
  };
  ws.onclose = () => {
    log.textContent += `\nclosed after ${decoder.bins} bins`;
  };
}
