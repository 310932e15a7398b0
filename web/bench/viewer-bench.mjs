// Viewer frame-time benchmark in headless Chromium (driven by bench/viewer.py, which starts the server).
//
//   node web/bench/viewer-bench.mjs --url http://127.0.0.1:PORT --serving ALIAS --token TOKEN [--speed 16]
//        [--seconds 15] [--rounds 3] [--history] [--chromium /usr/bin/chromium]
//
// The browser logs in once through login.html with --token (the session cookie then opens the stream).
//
// Each round opens the viewer on a fresh replay at --speed, lets it warm up 5 s, then measures for --seconds while
// bins stream in: rAF intervals (frame pacing), the page's own draw-time figures (window.__qmachinaStats: cache
// upkeep + draw per drawn frame, rolling p95 over 240 frames) and, from the DevTools Performance domain, the main
// thread's CPU time (ThreadTime) — unlike wall-clock figures it does not grow when a loaded machine deschedules the
// browser. --history adds a round with 30+ min of bins held (a 35-min window at 32x) zoomed out to all of it.
// Prints one JSON line per round; the last line is the JSON summary (medians over the rounds).

import { chromium } from 'playwright-core';

const args = Object.fromEntries(process.argv.slice(2).reduce((acc, a, i, all) => {
  if (a.startsWith('--')) acc.push([a.slice(2), all[i + 1] && !all[i + 1].startsWith('--') ? all[i + 1] : 'true']);
  return acc;
}, []));
const URL_ = args.url;
const SERVING = args.serving ?? 'bench';
const SPEED = Number(args.speed ?? 16);
const SECONDS = Number(args.seconds ?? 15);
const ROUNDS = Number(args.rounds ?? 3);
if (!URL_) throw new Error('--url is required');

const q = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(p * s.length))] : NaN;
};
const median = (xs) => q(xs, 0.5);

async function metrics(cdp) {
  const m = Object.fromEntries((await cdp.send('Performance.getMetrics')).metrics.map((x) => [x.name, x.value]));
  return { thread: m.ThreadTime, process: m.ProcessTime, task: m.TaskDuration, script: m.ScriptDuration, t: m.Timestamp };
}

async function measure(page, cdp, seconds) {
  const s0 = await page.evaluate(() => window.__qmachinaStats);
  const m0 = await metrics(cdp);
  const intervals = await page.evaluate((dur) => new Promise((resolve) => {
    const out = [];
    let last = -1;
    const t0 = performance.now();
    const tick = (t) => {
      if (last >= 0) out.push(t - last);
      last = t;
      if (t - t0 < dur) requestAnimationFrame(tick);
      else resolve(out);
    };
    requestAnimationFrame(tick);
  }), seconds * 1000);
  const m1 = await metrics(cdp);
  const s1 = await page.evaluate(() => window.__qmachinaStats);
  const wall = m1.t - m0.t;
  const frames = s1.frames - s0.frames;
  const bins = s1.bins - s0.bins;
  return {
    seconds: wall, bins, frames, gaps: s1.gaps - s0.gaps, held_min: s1.heldMs / 60_000, view_min: s1.viewSpanMs / 60_000,
    draw_ms_mean: s1.drawMsMean, draw_ms_p95: s1.drawMsP95,
    fps: (1000 * intervals.length) / intervals.reduce((a, b) => a + b, 0),
    raf_ms_p50: q(intervals, 0.5), raf_ms_p95: q(intervals, 0.95),
    main_thread_cpu_pct: (100 * (m1.thread - m0.thread)) / wall,
    renderer_cpu_pct: (100 * (m1.process - m0.process)) / wall,
    main_cpu_ms_per_frame: frames ? (1000 * (m1.thread - m0.thread)) / frames : NaN,
    script_ms_per_bin: bins ? (1000 * (m1.script - m0.script)) / bins : NaN,
  };
}

const browser = await chromium.launch({
  executablePath: args.chromium ?? '/usr/bin/chromium', headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
const rounds = [];
try {
  if (args.token) { // log in once: every page of the context shares the session cookie
    const login = await context.newPage();
    await login.goto(`${URL_}/registry.html`);
    await login.waitForURL(/\/login\.html/, { timeout: 30_000 });
    await login.locator('[data-testid="login-token"]').fill(args.token);
    await login.locator('[data-testid="login-submit"]').click();
    await login.waitForURL(/\/registry\.html$/, { timeout: 30_000 });
    await login.close();
  }
  for (let r = 0; r < ROUNDS; r++) {
    const page = await context.newPage();
    const cdp = await page.context().newCDPSession(page);
    await cdp.send('Performance.enable');
    const start = `18:${String(5 + 10 * r).padStart(2, '0')}`; // a fresh replay session per round
    await page.goto(`${URL_}/?serving=${SERVING}&speed=${SPEED}&start=${start}`);
    await page.waitForFunction(() => (window.__qmachinaStats?.bins ?? 0) > 20, undefined, { timeout: 120_000 });
    await page.waitForTimeout(5000);
    const res = { scenario: `follow_${SPEED}x`, round: r, ...(await measure(page, cdp, SECONDS)) };
    console.log(JSON.stringify(res));
    rounds.push(res);
    await page.close();
  }
  let history = null;
  if (args.history) {
    const page = await context.newPage();
    const cdp = await page.context().newCDPSession(page);
    await cdp.send('Performance.enable');
    await page.goto(`${URL_}/?serving=${SERVING}&start=18:00&end=18:35&speed=32`);
    await page.waitForFunction(() => (window.__qmachinaStats?.held ?? 0) >= 18_000, undefined, { timeout: 240_000 });
    const b = await page.locator('#overlay-canvas').boundingBox();
    await page.mouse.move(b.x + b.width * 0.5, b.y + b.height * 0.5);
    for (let k = 0; k < 12; k++) await page.mouse.wheel(0, 800);
    await page.waitForTimeout(500);
    history = { scenario: 'history_30min_32x', ...(await measure(page, cdp, 6)) };
    console.log(JSON.stringify(history));
    await page.close();
  }
  const keys = ['fps', 'raf_ms_p95', 'draw_ms_mean', 'draw_ms_p95', 'main_thread_cpu_pct', 'renderer_cpu_pct', 'main_cpu_ms_per_frame', 'script_ms_per_bin', 'gaps'];
  const summary = { speed: SPEED, seconds: SECONDS, rounds: ROUNDS };
  for (const k of keys) summary[`${k}_median`] = median(rounds.map((x) => x[k]));
  summary.draw_ms_p95_max = Math.max(...rounds.map((x) => x.draw_ms_p95));
  if (history) summary.history = history;
  console.log(JSON.stringify(summary));
} finally {
  await browser.close();
}
