/**
 * End-to-end: headless Debian Chromium (playwright-core, `executablePath`) against a real serving process on
 * loopback that serves this client's build, the stream and the REST API from one port. Started by
 * tests/web/test_web_e2e.py, which prepares a throw-away lake (real ESH4 sample, bronze), registers versions and
 * passes the environment described in helpers.ts.
 *
 * The viewer figures (frame time at 16× on the ±50 grid with every layer) are printed and written to
 * viewer-frame-time.json; one screenshot per mode lands in the artifacts directory.
 */

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ARTIFACTS, BASE, env, frameIntervals, launch, openPage as open, paintedPixels, plotBox, quantile, stats, waitForBins } from './helpers';

let browser: Browser;

beforeAll(async () => {
  browser = await launch();
});

afterAll(async () => {
  await browser?.close();
});

const openPage = (path: string, expectHttp: number[] = [], before?: (page: Page) => Promise<void>) => open(browser, path, expectHttp, before);

/** Hover the plot at fractions (fx, fy) of its box. */
async function hover(page: Page, fx: number, fy: number): Promise<void> {
  const b = await plotBox(page);
  await page.mouse.move(b.x + b.w * fx, b.y + b.h * fy);
}

describe('stream viewer', () => {
  it('heatmap at 16x: book colours, trades, ladder, profiles, legend; tooltip; frame time reported', async () => {
    const { page, errors } = await openPage('/?serving=live&speed=16');
    await waitForBins(page, 200);
    const intervals = await frameIntervals(page, 5000);
    const st = await stats(page);
    const painted = await paintedPixels(page);
    await page.screenshot({ path: join(ARTIFACTS, 'viewer-heatmap.png') });
    const figures = {
      speed: 16, bins: st.bins, held: st.held, frames: st.frames, draw_ms_mean: st.drawMsMean, draw_ms_p95: st.drawMsP95,
      ingest_ms_mean: st.ingestMsMean, raf_interval_ms_p50: quantile(intervals, 0.5), raf_interval_ms_p95: quantile(intervals, 0.95),
      raf_intervals: intervals.length, fps: (1000 * intervals.length) / intervals.reduce((a, b) => a + b, 0),
      painted_share: painted.share, colours: painted.colours, trades: st.trades, gaps: st.gaps,
    };
    writeFileSync(join(ARTIFACTS, 'viewer-frame-time.json'), JSON.stringify(figures, null, 2));
    console.log(`viewer frame time (16x, ±50 grid, all layers): ${JSON.stringify(figures)}`);
    expect(await page.locator('#error-panel').isHidden()).toBe(true);
    expect(await page.locator('#conn-state').getAttribute('data-state')).toBe('live');
    expect(st.field).toBe('book'); // bid/ask depth in two colour families by default
    expect(await page.locator('#source').innerText()).toBe('REPLAY');
    expect(painted.share).toBeGreaterThan(0.3); // a filled heatmap, not a blank or placeholder canvas
    expect(painted.colours).toBeGreaterThan(64);
    expect(st.frames).toBeGreaterThan(5);
    expect(st.trades).toBeGreaterThan(0); // trades derived from fill_mass are drawn as bubbles
    // `live` has a signal (flow_score): without signals= on the page the viewer asks for it by default
    expect(st.signals).toBe(true);
    expect(await page.locator('#signals').isChecked()).toBe(true);

    // crosshair tooltip: the cell's time, price, book and gold values
    await hover(page, 0.8, 0.5);
    const tip = page.locator('[data-testid="tooltip"]');
    await tip.waitFor({ state: 'visible' });
    const text = await tip.innerText();
    expect(text).toMatch(/\d\d:\d\d:\d\d\.\d{3}.* ET/);
    expect(text).toMatch(/price 4\d{3}\.\d\d/);
    expect(text).toContain('flow_score');
    expect(text).toContain('book');
    await page.screenshot({ path: join(ARTIFACTS, 'viewer-tooltip.png') });
    expect(errors).toEqual([]);
    await page.close();
  });

  it('zoom, pan into history (bins keep arriving), follow live, hotkeys, help, candles', async () => {
    const { page, errors } = await openPage('/?serving=live&speed=8');
    await waitForBins(page, 400);
    const b = await plotBox(page);
    await page.mouse.move(b.x + b.w * 0.5, b.y + b.h * 0.5);
    const span0 = (await stats(page)).viewSpanMs;
    await page.mouse.wheel(0, 600); // zoom time out (the live edge stays while following) …
    await expect.poll(async () => (await stats(page)).viewSpanMs).toBeGreaterThan(span0 * 1.5);
    for (let k = 0; k < 3; k++) await page.mouse.wheel(0, -500); // … and in, to less than the history held
    await expect.poll(async () => (await stats(page)).viewSpanMs).toBeLessThan(span0 / 2);
    // drag right: back in time
    await page.mouse.down();
    await page.mouse.move(b.x + b.w * 0.9, b.y + b.h * 0.4, { steps: 8 });
    await page.mouse.up();
    const before = await stats(page);
    expect(before.following).toBe(false);
    await page.waitForTimeout(1500);
    const after = await stats(page);
    expect(after.bins).toBeGreaterThan(before.bins + 50); // 8x: ~80 bins/s keep being buffered while browsing
    expect(after.held).toBe(before.held + (after.bins - before.bins)); // every bin received is held
    expect(after.following).toBe(false);
    await page.screenshot({ path: join(ARTIFACTS, 'viewer-history.png') });
    await page.keyboard.press('f');
    await expect.poll(async () => (await stats(page)).following).toBe(true);
    // shift+wheel zooms the price axis; R resets both
    await page.keyboard.down('Shift');
    await page.mouse.wheel(0, -400);
    await page.keyboard.up('Shift');
    await page.keyboard.press('r');
    // field cycling
    const field0 = (await stats(page)).field;
    await page.keyboard.press(']');
    await expect.poll(async () => (await stats(page)).field).not.toBe(field0);
    expect(await page.locator('#field').inputValue()).toBe((await stats(page)).field);
    await page.keyboard.press('[');
    await expect.poll(async () => (await stats(page)).field).toBe(field0);
    // pause keeps buffering
    await page.keyboard.press(' ');
    await page.waitForTimeout(300); // the one frame that shows the PAUSED banner
    const paused = await stats(page);
    await page.waitForTimeout(800);
    expect((await stats(page)).bins).toBeGreaterThan(paused.bins);
    expect((await stats(page)).frames).toBe(paused.frames); // nothing redrawn while paused
    await page.keyboard.press(' ');
    // help overlay
    await page.keyboard.press('?');
    const help = page.locator('[data-testid="help"]');
    await help.waitFor({ state: 'visible' });
    expect(await help.innerText()).toContain('follow live');
    await page.screenshot({ path: join(ARTIFACTS, 'viewer-help.png') });
    await page.keyboard.press('Escape');
    await help.waitFor({ state: 'hidden' });
    // candles: C toggles, the interval select aggregates, the price scale fits the visible range
    await page.keyboard.press('c');
    await page.selectOption('#candle-interval', '5000');
    await expect.poll(async () => (await stats(page)).mode).toBe('candle');
    await page.waitForTimeout(500);
    const painted = await paintedPixels(page);
    expect(painted.share).toBeGreaterThan(0.02);
    await page.screenshot({ path: join(ARTIFACTS, 'viewer-candles.png') });
    expect(errors).toEqual([]);
    await page.close();
  });

  it('seek to a time of day replays from there; a speed change continues and keeps the history', async () => {
    const { page, errors } = await openPage('/?serving=live&speed=8');
    await waitForBins(page, 100);
    await page.fill('#replay-start', '18:03:30');
    await page.click('#seek button[type="submit"]');
    await expect.poll(async () => page.locator('#replay-info').innerText(), { timeout: 30_000 }).toContain('18:03:30');
    await waitForBins(page, 50);
    expect(page.url()).toContain('start=18%3A03%3A30');
    const held = (await stats(page)).held;
    await page.selectOption('#replay-speed', '16');
    await expect.poll(async () => page.locator('#replay-info').innerText(), { timeout: 30_000 }).toContain('16×');
    await page.waitForTimeout(1500);
    const st = await stats(page);
    expect(st.held).toBeGreaterThan(held); // continued: the bins before the speed change are still there
    expect(st.state).toBe('live');
    expect(errors).toEqual([]);
    await page.close();
  });

  it('a dropped connection reconnects from the newest bin and keeps the history', async () => {
    const urls: string[] = [];
    // 2x: every frame goes through Playwright's WebSocket proxy (the driver process), keep it light
    const { page } = await openPage('/?serving=live&speed=2', [], (p) => p.routeWebSocket(/\/v1\/stream/, (ws) => {
      urls.push(ws.url());
      ws.connectToServer(); // pass everything through ...
      if (urls.length === 1) setTimeout(() => ws.close({ code: 1012, reason: 'test: dropped' }), 2500); // ... then drop
    }));
    await expect.poll(() => urls.length, { timeout: 30_000 }).toBeGreaterThanOrEqual(2);
    const before = await stats(page);
    await waitForBins(page, before.bins + 20);
    const after = await stats(page);
    expect(urls[1]).toMatch(/start=18%3A0\d%3A\d\d/); // continues at the newest bin's ET time ...
    expect(after.held).toBe(after.bins); // ... and nothing was thrown away or doubled (overlap skipped)
    expect(after.held).toBeGreaterThan(before.held);
    expect(after.state).toBe('live');
    await page.close();
  });

  it('signals=1: entry/exit markers painted at their bin and price, the score in the HUD and the tooltip', async () => {
    // flow_score at threshold 0.15 on the sample window trades: the first entry fills at 18:00:30.1 (bin 301) and
    // exits at its TP at 18:00:40.9; from 18:00:20 at 16x both arrive within ~1.5 s of the first bin
    const t0 = Date.now();
    const { page, errors } = await openPage('/?serving=live&start=18:00:20&speed=16&signals=1');
    await page.waitForFunction(() => (window.__qmachinaStats?.signalMarkers ?? 0) >= 2 && (window.__qmachinaStats?.markersDrawn.length ?? 0) >= 2,
      undefined, { timeout: 60_000 });
    const hud = page.locator('[data-testid="signal-hud"]');
    expect(await hud.isVisible()).toBe(true);
    expect(await page.locator('[data-testid="signal-legend"]').innerText()).toContain('flow_score · threshold 0.15 · TP 8 / SL 4 ticks');
    await expect.poll(async () => page.locator('[data-testid="signal-state"]').innerText()).toMatch(/^score [+-]\d\.\d{3} · (flat|LONG|SHORT)/);
    await page.keyboard.press(' '); // pause: the canvas stays as drawn, so its pixels match the drawn markers
    await page.waitForTimeout(300);
    const painted = await page.evaluate(() => {
      const st = window.__qmachinaStats!;
      const c = document.querySelector<HTMLCanvasElement>('#viewer-canvas')!;
      const ctx = c.getContext('2d')!;
      const fill: Record<string, string> = { entry_long: '54,214,126', entry_short: '255,79,109', exit: '245,245,245' };
      const hits = st.markersDrawn.filter((m) => {
        if (m.x < 0 || m.y < 0 || m.x >= c.width || m.y >= c.height) return false;
        const d = ctx.getImageData(Math.round(m.x), Math.round(m.y), 1, 1).data;
        return `${d[0]},${d[1]},${d[2]}` === fill[m.kind];
      });
      return { drawn: st.markersDrawn.length, hits: hits.map((m) => m.kind), stats: st };
    });
    expect(painted.hits.length).toBeGreaterThan(0); // a marker's own colour at its centre: painted, not only listed
    const st = painted.stats;
    expect(st.signals).toBe(true);
    expect(st.signalScore).not.toBeNull();
    expect(st.signalMessages).toBeGreaterThanOrEqual(st.bins); // one per bin (+ the final one at the end)
    await page.keyboard.press(' ');
    // the tooltip has the score at the crosshair's bin (every bin of the window has one)
    await hover(page, 0.9, 0.5);
    const tip = page.locator('[data-testid="tooltip"]');
    await tip.waitFor({ state: 'visible' });
    expect(await tip.innerText()).toMatch(/signal score\s+[+-]\d\.\d{4}/);
    await page.mouse.move(0, 0);
    await page.screenshot({ path: join(ARTIFACTS, 'viewer-signals.png') });
    const figures = {
      speed: 16, bins: st.bins, signal_messages: st.signalMessages, markers: st.signalMarkers, markers_drawn: painted.drawn,
      markers_painted: painted.hits.length, frames: st.frames, draw_ms_mean: st.drawMsMean, draw_ms_p95: st.drawMsP95,
      ingest_ms_mean: st.ingestMsMean, wall_s: (Date.now() - t0) / 1000,
    };
    writeFileSync(join(ARTIFACTS, 'viewer-signals.json'), JSON.stringify(figures, null, 2));
    console.log(`viewer with signal markers (16x): ${JSON.stringify(figures)}`);
    expect(await page.locator('#error-panel').isHidden()).toBe(true);
    expect(errors).toEqual([]);
    await page.close();
  });

  it('without the version from the REST API, the hello decides (signals=1); the toggle switches it off and continues', async () => {
    const sockets: string[] = [];
    const { page, errors } = await openPage('/?serving=live&speed=8', [], async (p) => {
      p.on('websocket', (ws) => sockets.push(ws.url()));
      await p.route(/\/v1\/serving\/versions\//, (route) => route.abort()); // the default cannot be read up front
    });
    await page.waitForFunction(() => (window.__qmachinaStats?.signalMessages ?? 0) >= 20, undefined, { timeout: 30_000 });
    expect(sockets).toHaveLength(2);
    expect(sockets[0]).not.toContain('signals=');
    expect(sockets[1]).toContain('signals=1');
    expect(await page.locator('#signals').isChecked()).toBe(true);
    const st = await stats(page);
    expect(st.held).toBe(st.bins); // the plain connection's bins (if any came) were not kept twice
    // the toggle switches it off: the stream continues from the newest bin without signals, the HUD goes
    await page.locator('#signals').uncheck();
    await expect.poll(() => sockets.length).toBe(3);
    expect(sockets[2]).not.toContain('signals=');
    expect(sockets[2]).toMatch(/start=18%3A0\d%3A\d\d/);
    await expect.poll(async () => (await stats(page)).signals).toBe(false);
    await expect.poll(async () => page.locator('[data-testid="signal-hud"]').isHidden()).toBe(true);
    expect(page.url()).toContain('signals=0');
    await waitForBins(page, st.bins + 10);
    expect((await stats(page)).markersDrawn).toEqual([]);
    expect(errors.filter((e) => !e.includes('/v1/serving/versions/'))).toEqual([]);
    await page.close();
  });

  it('signals=1 on a version without a signal (4422) falls back to the plain stream with a note', async () => {
    const { page, errors } = await openPage(`/?serving=${env('QMACHINA_E2E_EMA')}&speed=4&signals=1`);
    await waitForBins(page, 10);
    const st = await stats(page);
    expect(st.signals).toBe(false);
    expect(await page.locator('#signals').isChecked()).toBe(false);
    expect(await page.locator('[data-testid="signal-state"]').innerText()).toMatch(/signal not streamed \(4422\).*has no signal/);
    expect(await page.locator('#error-panel').isHidden()).toBe(true);
    expect(st.state).toBe('live');
    expect(errors).toEqual([]);
    await page.close();
  });

  it('draws the EMA ensemble in candle mode from one-row frames', async () => {
    const { page, errors } = await openPage(`/?serving=${env('QMACHINA_E2E_EMA')}&speed=4`);
    await waitForBins(page, 20);
    const painted = await paintedPixels(page);
    await page.screenshot({ path: join(ARTIFACTS, 'viewer-ema-candles.png') });
    expect(await page.locator('#error-panel').isHidden()).toBe(true);
    expect(await page.locator('#mode').inputValue()).toBe('candle');
    expect(painted.share).toBeGreaterThan(0.005);
    expect((await stats(page)).signals).toBe(false); // no signal in this version: the plain stream, no HUD
    expect(await page.locator('[data-testid="signal-hud"]').isHidden()).toBe(true);
    expect(errors).toEqual([]);
    await page.close();
  });

  it('an unknown alias shows one message', async () => {
    const { page } = await openPage('/?serving=no_such_alias');
    await page.locator('#error-panel').waitFor({ state: 'visible', timeout: 30_000 });
    await expect.poll(async () => page.locator('#conn-state').getAttribute('data-state')).toBe('error');
    const text = await page.locator('#error-panel').innerText();
    await page.screenshot({ path: join(ARTIFACTS, 'viewer-unknown-alias.png') });
    expect(text).toContain('no_such_alias');
    const everything = await page.locator('#app').innerText();
    expect(everything.split('no_such_alias').length - 1).toBe(1); // the server's message once, not twice
    await page.close();
  });

  it('a day without bins says so and offers the days with data', async () => {
    const { page } = await openPage('/?serving=live&date=2023-12-24');
    const panel = page.locator('#error-panel');
    await panel.waitFor({ state: 'visible', timeout: 30_000 });
    expect(await panel.innerText()).toContain('No data');
    const link = panel.locator('.error-days a', { hasText: '2023-12-25' });
    await page.screenshot({ path: join(ARTIFACTS, 'viewer-no-data.png') });
    await link.click();
    await waitForBins(page, 5);
    expect(page.url()).toContain('date=2023-12-25');
    await page.close();
  });
});

describe('page navigation', () => {
  it('the bare viewer lists the aliases to open; the experiment page loads on an empty results store', async () => {
    const { page, errors } = await openPage('/');
    const chooser = page.locator('[data-testid="chooser"]');
    await chooser.waitFor({ state: 'visible', timeout: 30_000 });
    const links = await chooser.locator('a').allInnerTexts();
    expect(links.sort()).toEqual(['ema', 'live']);
    await page.locator('a.page-link', { hasText: 'experiments' }).click();
    await page.waitForURL(/experiments\.html/);
    await expect.poll(async () => page.locator('[data-testid="experiments-status"]').innerText(), { timeout: 30_000 })
      .toContain('no experiment results');
    await page.screenshot({ path: join(ARTIFACTS, 'experiments-empty.png') });
    expect(errors).toEqual([]);
    await page.close();
  });
});

describe('serving registry page', () => {
  it('rolls an alias back, and a new stream connection then serves the previous version', async () => {
    const from = env('QMACHINA_E2E_LIVE_FROM');
    const to = env('QMACHINA_E2E_LIVE_TO');
    const { page, errors } = await openPage('/registry.html');
    const row = page.locator('[data-testid="alias-row"][data-alias="live"]');
    await expect.poll(async () => (await row.locator('[data-testid="alias-version"]').innerText()).trim(), { timeout: 30_000 }).toBe(from);
    await page.screenshot({ path: join(ARTIFACTS, 'registry-before.png'), fullPage: true });

    await row.locator('[data-testid="rollback"]').click();
    const dialog = page.locator('dialog[data-testid="confirm"]');
    await dialog.waitFor({ state: 'visible' });
    await dialog.locator('[data-testid="confirm-reason"]').fill('e2e: roll back to the previous version');
    await page.screenshot({ path: join(ARTIFACTS, 'registry-confirm.png') });
    await dialog.locator('[data-testid="confirm-ok"]').click();
    await expect.poll(async () => (await row.locator('[data-testid="alias-version"]').innerText()).trim(), { timeout: 30_000 }).toBe(to);
    await page.screenshot({ path: join(ARTIFACTS, 'registry-after.png'), fullPage: true });
    expect(await page.locator('[data-testid="registry-status"]').innerText()).toContain(to);

    // A new stream connection from the browser: its runtime_config names the version the alias now points at.
    const served = await page.evaluate(
      (url) =>
        new Promise<string>((resolve, reject) => {
          const ws = new WebSocket(url);
          ws.onmessage = (m) => {
            const d = JSON.parse(String(m.data));
            ws.close();
            if (d.type === 'runtime_config') resolve(d.serving.serving_id);
            else reject(new Error(`first message ${d.type}: ${String(m.data).slice(0, 200)}`));
          };
          ws.onerror = () => reject(new Error('websocket error'));
        }),
      `${BASE.replace(/^http/, 'ws')}/v1/stream?serving=live`,
    );
    expect(served).toBe(to);
    expect(errors).toEqual([]);
    await page.close();
  });
});
