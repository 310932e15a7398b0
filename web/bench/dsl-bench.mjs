/**
 * Browser Gold DSL benchmark (run by bench/gold.py --browser, or alone: `node web/bench/dsl-bench.mjs`):
 * bundles web/src/gold/dslRuntime.ts with Vite, loads it into headless Debian Chromium (playwright-core) and
 * streams a spec one `DslRuntime.step` per bin over a ±R grid of deterministic synthetic depth, timed in the
 * page with performance.now(). Prints one JSON line: bins, seconds, bins_per_s (best of `--rounds`).
 *
 * Options: --spec PATH (JSON or the spec of a fixture; default configs/gold/depth_imbalance.yaml as JSON via
 * tests/fixtures/gold_dsl/depth_imbalance.spec.json), --bins N (20000), --radius R (50), --rounds K (3),
 * --chromium PATH (QMACHINA_E2E_CHROMIUM or /usr/bin/chromium).
 */

import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { build } from 'vite';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '..', '..');

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const specPath = arg('spec', join(ROOT, 'tests', 'fixtures', 'gold_dsl', 'depth_imbalance.spec.json'));
const nBins = Number(arg('bins', '20000'));
const radius = Number(arg('radius', '50'));
const rounds = Number(arg('rounds', '3'));
const executablePath = arg('chromium', process.env.QMACHINA_E2E_CHROMIUM ?? '/usr/bin/chromium');
const spec = JSON.parse(readFileSync(specPath, 'utf8'));

const out = await build({
  configFile: false,
  logLevel: 'silent',
  root: join(ROOT, 'web'),
  build: {
    write: false,
    minify: true,
    lib: { entry: join(ROOT, 'web', 'src', 'gold', 'dslRuntime.ts'), formats: ['iife'], name: 'QDSL' },
  },
});
const bundle = (Array.isArray(out) ? out[0] : out).output[0].code;

const browser = await chromium.launch({ executablePath, headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
try {
  const page = await browser.newPage();
  await page.addScriptTag({ content: bundle });
  const result = await page.evaluate(({ spec, nBins, radius, rounds }) => {
    const w = 2 * radius + 1;
    const k = Int32Array.from({ length: w }, (_, j) => j - radius);
    // deterministic synthetic silver: depth that moves with the spot, spot random walk, a few invalid bins
    let seed = 7;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
    const spots = new Array(nBins);
    const valid = new Array(nBins);
    const cols = {};
    const fields = new QDSL.DslRuntime(spec, radius, 250000000n, 100).program.fields;
    for (const f of fields) cols[f] = new Float64Array(nBins * w);
    let tick = 20000;
    for (let b = 0; b < nBins; b++) {
      const r = rand();
      tick += r < 0.05 ? -1 : r > 0.95 ? 1 : 0;
      spots[b] = BigInt(tick) * 250000000n;
      valid[b] = rand() > 0.001;
      for (const f of fields) {
        const a = cols[f];
        for (let j = 0; j < w; j++) a[b * w + j] = rand() < 0.2 ? 0 : Math.round(rand() * 200);
      }
    }
    const inputs = Array.from({ length: nBins }, (_, b) => {
      const grid = { k };
      for (const f of fields) grid[f] = cols[f].subarray(b * w, (b + 1) * w);
      return { binSeq: b, spotRefPriceInt: spots[b], bookValid: valid[b], grid };
    });
    const times = [];
    let checksum = 0;
    for (let r = 0; r < rounds; r++) {
      const rt = new QDSL.DslRuntime(spec, radius, 250000000n, 100);
      const t0 = performance.now();
      for (let b = 0; b < nBins; b++) {
        const o = rt.step(inputs[b]);
        checksum += o.values[rt.outputNames[0]][radius];
      }
      times.push((performance.now() - t0) / 1000);
    }
    return { times, checksum, outputs: new QDSL.DslRuntime(spec, radius, 250000000n, 100).outputNames.length };
  }, { spec, nBins, radius, rounds });
  const best = Math.min(...result.times);
  const figures = {
    spec: spec.name, nodes: Object.keys(spec.nodes).length, radius, bins: nBins, rounds,
    seconds: result.times.map((t) => Math.round(t * 1000) / 1000), bins_per_s: Math.round(nBins / best),
    browser: browser.version(),
  };
  console.log(`browser DSL ${spec.name} (${figures.nodes} nodes), one bin per step on ±${radius}: `
    + `${figures.bins_per_s.toLocaleString()} bins/s (best of ${rounds}; target >= 2,000)`);
  console.log(JSON.stringify(figures));
} finally {
  await browser.close();
}
