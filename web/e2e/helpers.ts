/**
 * Shared pieces of the browser suite (web/e2e/*.e2e.ts): the environment tests/web/test_web_e2e.py passes, the
 * browser, pages that record errors, and measurements (painted pixels, rAF intervals, the viewer's stats).
 *
 *   QMACHINA_E2E_URL        http://127.0.0.1:<port>
 *   QMACHINA_E2E_ARTIFACTS  directory for screenshots and frame-time figures
 *   QMACHINA_E2E_CHROMIUM   browser binary (default /usr/bin/chromium)
 *   QMACHINA_E2E_LIVE_FROM / QMACHINA_E2E_LIVE_TO   alias `live` points at FROM; a rollback returns it to TO
 *   QMACHINA_E2E_EMA        alias of an ema_ensemble version
 *   QMACHINA_E2E_TOKEN      an admin's API token: each browser logs in once through login.html (HttpOnly cookie)
 */

import { mkdirSync } from 'node:fs';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import type { QmachinaStats } from '../src/viewer/app';

export function env(name: string, fallback?: string): string {
  const v = process.env[name] ?? fallback;
  if (!v) throw new Error(`${name} is not set: run the browser tests through tests/web/test_web_e2e.py`);
  return v;
}

export const BASE = env('QMACHINA_E2E_URL');
export const ARTIFACTS = env('QMACHINA_E2E_ARTIFACTS');
mkdirSync(ARTIFACTS, { recursive: true });

export function launch(): Promise<Browser> {
  return chromium.launch({
    executablePath: env('QMACHINA_E2E_CHROMIUM', '/usr/bin/chromium'),
    headless: true,
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
}

const sessions = new WeakMap<Browser, Promise<BrowserContext>>();

/** The browser's logged-in context: without a session a page goes to the login page; logging in there with
 * QMACHINA_E2E_TOKEN brings it back, with an HttpOnly SameSite=Strict cookie that does not hold the token. */
export function session(browser: Browser): Promise<BrowserContext> {
  let ctx = sessions.get(browser);
  if (!ctx) {
    ctx = (async () => {
      const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
      const page = await context.newPage();
      await page.goto(`${BASE}/registry.html`);
      await page.waitForURL(/\/login\.html\?next=/, { timeout: 30_000 });
      await page.locator('[data-testid="login-token"]').fill(env('QMACHINA_E2E_TOKEN'));
      await page.locator('[data-testid="login-submit"]').click();
      await page.waitForURL(/\/registry\.html$/, { timeout: 30_000 });
      const cookie = (await context.cookies()).find((c) => c.name === 'qm_session');
      if (!cookie || !cookie.httpOnly || cookie.sameSite !== 'Strict') throw new Error('no HttpOnly SameSite=Strict session cookie');
      if (cookie.value.includes(env('QMACHINA_E2E_TOKEN'))) throw new Error('the session cookie holds the token itself');
      await page.close();
      return context;
    })();
    sessions.set(browser, ctx);
  }
  return ctx;
}

/** A page (of the browser's logged-in session) that records console errors, uncaught exceptions and failed HTTP
 * responses (a test fails on any; the browser's own favicon probe excepted). `expectHttp` lists statuses a test
 * provokes on purpose; `before` runs before the page loads. */
export async function openPage(browser: Browser, path: string, expectHttp: number[] = [],
  before?: (page: Page) => Promise<void>): Promise<{ page: Page; errors: string[] }> {
  const page = await (await session(browser)).newPage();
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
  if (before) await before(page); // e.g. routes to set up before the page loads
  await page.goto(BASE + path);
  return { page, errors };
}

/** Share of canvas pixels that differ from the background colour (the most common one) and distinct colours. */
export async function paintedPixels(page: Page): Promise<{ share: number; colours: number; width: number; height: number }> {
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
export async function frameIntervals(page: Page, ms: number): Promise<number[]> {
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

export function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(q * s.length))] : NaN;
}

export function stats(page: Page): Promise<QmachinaStats> {
  return page.evaluate(() => window.__qmachinaStats!);
}

export async function waitForBins(page: Page, n: number, timeout = 60_000): Promise<void> {
  await page.waitForFunction((k) => (window.__qmachinaStats?.bins ?? 0) >= k && (window.__qmachinaStats?.frames ?? 0) > 0, n, { timeout });
}

/** The plot's box in page coordinates (the overlay canvas minus the ladder/profile panels and the time axis). */
export async function plotBox(page: Page): Promise<{ x: number; y: number; w: number; h: number }> {
  const b = (await page.locator('#overlay-canvas').boundingBox())!;
  return { x: b.x, y: b.y, w: b.width - (66 + 58 + 58), h: b.height - 22 };
}
