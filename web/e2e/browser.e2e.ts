/**
 * End-to-end: headless Debian Chromium (playwright-core, `executablePath`) against a real serving process on
 * loopback that serves this client's build, the stream and the REST API from one port.
 *
 * Started by tests/web/test_web_e2e.py, which prepares a throw-away lake (real ESH4 sample, bronze), registers
 * versions and passes:
 *   QMACHINA_E2E_URL        http://127.0.0.1:<port>
 *   QMACHINA_E2E_ARTIFACTS  directory for screenshots and frame-time figures
 *   QMACHINA_E2E_CHROMIUM   browser binary (default /usr/bin/chromium)
 *   QMACHINA_E2E_LIVE_FROM / QMACHINA_E2E_LIVE_TO   alias `live` points at FROM; a rollback returns it to TO
 *   QMACHINA_E2E_EMA        alias of an ema_ensemble version
 *   QMACHINA_E2E_TOKEN      an admin's API token: the suite logs in once through login.html (HttpOnly cookie)
 */

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

function env(name: string, fallback?: string): string {
  const v = process.env[name] ?? fallback;
  if (!v) throw new Error(`${name} is not set: run the browser tests through tests/web/test_web_e2e.py`);
  return v;
}

const BASE = env('QMACHINA_E2E_URL');
const ARTIFACTS = env('QMACHINA_E2E_ARTIFACTS');
mkdirSync(ARTIFACTS, { recursive: true });

let browser: Browser;
let context: BrowserContext; // logged in (the session cookie), shared by the tests' pages

beforeAll(async () => {
  browser = await chromium.launch({
    executablePath: env('QMACHINA_E2E_CHROMIUM', '/usr/bin/chromium'),
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
  context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  // Without a session a page goes to the login page; logging in there brings it back.
  const page = await context.newPage();
  await page.goto(`${BASE}/registry.html`);
  await page.waitForURL(/\/login\.html\?next=/, { timeout: 30_000 });
  await page.locator('[data-testid="login-token"]').fill(env('QMACHINA_E2E_TOKEN'));
  await page.locator('[data-testid="login-submit"]').click();
  await page.waitForURL(/\/registry\.html$/, { timeout: 30_000 });
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === 'qm_session');
  if (!session || !session.httpOnly || session.sameSite !== 'Strict') throw new Error(`no HttpOnly SameSite=Strict session cookie: ${JSON.stringify(cookies)}`);
  if (session.value.includes(env('QMACHINA_E2E_TOKEN'))) throw new Error('the cookie holds the token itself');
  await page.close();
});

afterAll(async () => {
  await browser?.close();
});

/** A page that records console errors, uncaught exceptions and failed HTTP responses (a test fails on any;
 * the browser's own favicon probe excepted). `expectHttp` lists statuses a test provokes on purpose. */
async function openPage(path: string, expectHttp: number[] = []): Promise<{ page: Page; errors: string[] }> {
  const page = await context.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    // "Failed to load resource" repeats a failed response without its URL: the response handler reports it.
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(`console: ${m.text()}`);
  });
  page.on('response', (r) => {
    if (r.status() >= 400 && !r.url().endsWith('/favicon.ico') && !expectHttp.includes(r.status())) {
      errors.push(`http ${r.status()}: ${r.request().method()} ${r.url()}`);
    }
  });
  await page.goto(BASE + path);
  return { page, errors };
}

/** Share of canvas pixels that differ from the background colour (the most common one) and distinct colours. */
async function paintedPixels(page: Page): Promise<{ share: number; colours: number; width: number; height: number }> {
  return page.evaluate(() => {
    const c = document.querySelector<HTMLCanvasElement>('#viewer-canvas')!;
    const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
    const counts = new Map<number, number>();
    for (let i = 0; i < d.length; i += 4) {
      const key = ((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]) >>> 0;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    const n = d.length / 4;
    const background = Math.max(...counts.values());
    return { share: (n - background) / n, colours: counts.size, width: c.width, height: c.height };
  });
}

/** rAF intervals over `ms` of wall time while bins stream in (the page's own frame pacing). */
async function frameIntervals(page: Page, ms: number): Promise<number[]> {
  return page.evaluate(
    (dur) =>
      new Promise<number[]>((resolve) => {
        const out: number[] = [];
        let last = -1;
        const t0 = performance.now();
        const tick = (t: number) => {
          if (last >= 0) out.push(t - last);
          last = t;
          if (t - t0 < dur) requestAnimationFrame(tick);
          else resolve(out);
        };
        requestAnimationFrame(tick);
      }),
    ms,
  );
}

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(q * s.length))] : NaN;
}

async function waitForBins(page: Page, n: number): Promise<void> {
  await page.waitForFunction((k) => (window.__qmachinaStats?.bins ?? 0) >= k && (window.__qmachinaStats?.frames ?? 0) > 0, n, {
    timeout: 60_000,
  });
}

describe('stream viewer', () => {
  it('receives frames and paints the heatmap (vacuum_pressure, ±50 ticks, 100 ms bins); frame time reported', async () => {
    const { page, errors } = await openPage('/?serving=live');
    await waitForBins(page, 20);
    const intervals = await frameIntervals(page, 4000);
    const stats = await page.evaluate(() => window.__qmachinaStats!);
    const painted = await paintedPixels(page);
    await page.screenshot({ path: join(ARTIFACTS, 'viewer-heatmap.png') });
    const figures = {
      bins: stats.bins, frames: stats.frames, draw_ms_mean: stats.drawMsMean, draw_ms_p95: stats.drawMsP95,
      raf_interval_ms_p50: quantile(intervals, 0.5), raf_interval_ms_p95: quantile(intervals, 0.95),
      raf_intervals: intervals.length, fps: (1000 * intervals.length) / intervals.reduce((a, b) => a + b, 0),
      painted_share: painted.share, colours: painted.colours,
    };
    writeFileSync(join(ARTIFACTS, 'viewer-frame-time.json'), JSON.stringify(figures, null, 2));
    console.log(`viewer frame time: ${JSON.stringify(figures)}`);
    expect(await page.locator('#error-panel').isHidden()).toBe(true);
    expect(await page.locator('#conn-state').getAttribute('data-state')).toBe('live');
    expect(painted.share).toBeGreaterThan(0.05); // a heatmap, not a blank or placeholder canvas
    expect(painted.colours).toBeGreaterThan(16);
    expect(stats.frames).toBeGreaterThan(5);
    expect(errors).toEqual([]);
    await page.close();
  });

  it('draws the EMA ensemble in candle mode from one-row frames', async () => {
    const { page, errors } = await openPage(`/?serving=${env('QMACHINA_E2E_EMA')}`);
    await waitForBins(page, 20);
    const painted = await paintedPixels(page);
    await page.screenshot({ path: join(ARTIFACTS, 'viewer-ema-candles.png') });
    expect(await page.locator('#error-panel').isHidden()).toBe(true);
    expect(await page.locator('#mode').inputValue()).toBe('candle');
    expect(painted.share).toBeGreaterThan(0.005);
    expect(errors).toEqual([]);
    await page.close();
  });

  it('shows a contract or server error instead of a blank screen', async () => {
    const { page } = await openPage('/?serving=no_such_alias');
    await page.locator('#error-panel').waitFor({ state: 'visible', timeout: 30_000 });
    const text = await page.locator('#error-panel').innerText();
    await page.screenshot({ path: join(ARTIFACTS, 'viewer-unknown-alias.png') });
    expect(text).toContain('no_such_alias');
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
