/**
 * 30 minutes of history: a 35-minute window of the real ESH4 sample replayed at 32x (~66 s) fills the viewer's
 * buffer past 30 min of 100 ms bins (18 000+ bins, ±50 ticks); then the whole history is zoomed out, panned and
 * zoomed in while the last bins still stream. Checks that every bin received is held (nothing dropped by the
 * viewer) and prints the draw time over the full history with every layer (a benchmark figure, not a limit).
 * The server runs with a 1024-bin client queue (tests/web/test_web_e2e.py) so a short stall of this loaded test
 * machine's browser does not make it skip bins at 32x.
 */

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ARTIFACTS, frameIntervals, launch, openPage, paintedPixels, plotBox, quantile, stats } from './helpers';

let browser: Browser;
beforeAll(async () => {
  browser = await launch();
});
afterAll(async () => {
  await browser?.close();
});

const THIRTY_MIN_BINS = 18_000;

describe('history', () => {
  it('holds 30+ min of bins, zooms out over all of it and pans without dropping incoming bins', async () => {
    const { page, errors } = await openPage(browser, '/?serving=live&start=17:00&end=17:35&speed=32');
    await page.waitForFunction((n) => (window.__qmachinaStats?.held ?? 0) >= n, THIRTY_MIN_BINS, { timeout: 150_000 });
    const b = await plotBox(page);
    await page.mouse.move(b.x + b.w * 0.6, b.y + b.h * 0.5);
    for (let k = 0; k < 12; k++) await page.mouse.wheel(0, 800); // zoom out to the whole history
    await expect.poll(async () => (await stats(page)).viewSpanMs).toBeGreaterThanOrEqual(30 * 60_000);
    const wide = await stats(page);
    const intervals = await frameIntervals(page, 3000); // following, 30 min on screen, bins arriving at 32x
    const full = await stats(page);
    await page.screenshot({ path: join(ARTIFACTS, 'viewer-history-30min.png') });
    // browse: drag into the past, zoom in there, while bins keep streaming
    await page.mouse.down();
    await page.mouse.move(b.x + b.w * 0.9, b.y + b.h * 0.5, { steps: 10 });
    await page.mouse.up();
    for (let k = 0; k < 4; k++) await page.mouse.wheel(0, -500);
    const browsing = await stats(page);
    expect(browsing.following).toBe(false);
    await page.waitForFunction(() => window.__qmachinaStats?.state === 'ended', undefined, { timeout: 60_000 });
    const end = await stats(page);
    const painted = await paintedPixels(page);
    const figures = {
      held_bins: end.held, held_min: end.heldMs / 60_000, bins: end.bins, last_seq: end.lastSeq, gaps: end.gaps,
      span_min_zoomed_out: wide.viewSpanMs / 60_000, draw_ms_mean: full.drawMsMean, draw_ms_p95: full.drawMsP95,
      raf_interval_ms_p50: quantile(intervals, 0.5), raf_interval_ms_p95: quantile(intervals, 0.95),
      fps: (1000 * intervals.length) / intervals.reduce((a, c) => a + c, 0), painted_share: painted.share,
    };
    writeFileSync(join(ARTIFACTS, 'viewer-history.json'), JSON.stringify(figures, null, 2));
    console.log(`viewer 30-min history: ${JSON.stringify(figures)}`);
    expect(end.heldMs).toBeGreaterThanOrEqual(30 * 60_000);
    expect(end.held).toBeGreaterThanOrEqual(THIRTY_MIN_BINS);
    expect(end.lastSeq).toBe(20_999); // the stream reached its end ...
    expect([end.bins, end.gaps]).toEqual([21_000, 0]); // ... and every one of its bins was taken in
    expect(errors).toEqual([]);
    await page.close();
  }, 300_000);
});
