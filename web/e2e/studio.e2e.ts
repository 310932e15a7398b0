/**
 * Model Studio end to end (tests/web/test_studio_e2e.py runs it against a serving process and a real
 * `dagster dev`): from an empty session through the seven steps, with a page reload while the run goes,
 * to frames of the newly promoted alias in the viewer. No CLI step.
 *
 *   QMACHINA_E2E_PIPELINE   the pipeline to pick (two synthetic days)
 *   QMACHINA_E2E_BASE       the base serving spec (wire schema, layout)
 *   QMACHINA_E2E_ALIAS      the alias to promote to
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser } from 'playwright-core';
import { ARTIFACTS, env, launch, openPage, waitForBins } from './helpers';

describe('model studio', () => {
  let browser: Browser;
  beforeAll(async () => { browser = await launch(); });
  afterAll(async () => { await browser?.close(); });

  it('builds, runs, compares and promotes a model, then streams it', async () => {
    const { page, errors } = await openPage(browser, '/studio.html');
    const t = (id: string) => page.locator(`[data-testid="${id}"]`);
    const info = () => t('session-info').textContent();
    await expect.poll(() => t('studio-status').textContent(), { timeout: 30_000 }).toMatch(/create a session|session /);
    await t('new-session').click();
    await expect.poll(info).toContain('draft');
    expect(await t('commit-gold').isDisabled()).toBe(true); // gated: data first

    await t('data-pipeline').selectOption(env('QMACHINA_E2E_PIPELINE'));
    await t('data-preview').click();
    // the days are not built before the first run: the preview says so per day (the run builds them)
    await expect.poll(() => t('preview').textContent()).toMatch(/2024-03-14 · (\d+ bins|not built yet)/);
    await t('commit-data').click();
    await expect.poll(info).toContain('next: gold');
    await t('commit-gold').click();
    await expect.poll(info).toContain('next: signal');
    await t('signal-base').selectOption(env('QMACHINA_E2E_BASE'));
    await t('commit-signal').click();
    await expect.poll(info).toContain('next: evaluation');
    for (const [id, v] of [['ev-thresholds', '0.1, 0.2'], ['ev-tp', '4, 8'], ['ev-sl', '4'], ['ev-cooldown', '10'],
      ['ev-hold', '600'], ['ev-warmup', '100'], ['ev-min-signals', '1'], ['ev-g-trades', '1'], ['ev-g-hit', '0'],
      ['ev-g-pf', '0'], ['ev-g-dd', '1000']] as const) await t(id).fill(v);
    await expect.poll(() => t('ev-estimate').textContent()).toContain('4 parameter sets per day × 1 test day(s)');
    await t('commit-evaluation').click();
    await expect.poll(info).toContain('next: run');

    await t('run-launch').click();
    await expect.poll(() => t('run-text').textContent(), { timeout: 30_000 }).toMatch(/queued|running|parameter sets/);
    await page.reload(); // the session and the run's events resume after a reload
    await expect.poll(info, { timeout: 30_000 }).toContain('next: run');
    await expect.poll(() => t('run-text').textContent(), { timeout: 240_000 }).toContain('completed');
    expect(await page.locator('[data-testid="run-events"] li[data-kind="progress"]').count()).toBeGreaterThan(0);
    await expect.poll(info, { timeout: 30_000 }).toContain('next: compare');

    await expect.poll(() => page.locator('[data-testid="compare-table"] tbody tr').count(), { timeout: 30_000 }).toBe(4);
    await expect.poll(() => page.locator('[data-testid="sensitivity"] .axis').count()).toBeGreaterThan(0);
    await page.locator('[data-testid="compare-table"] tbody tr').first().click();
    await expect.poll(() => t('cmp-run').textContent()).not.toBe('');
    await t('commit-compare').click();
    await expect.poll(info).toContain('next: promote');

    await t('gate-check').click();
    await expect.poll(() => page.locator('[data-testid="gate-result"] li').count()).toBeGreaterThan(0);
    await t('promote-alias').fill(env('QMACHINA_E2E_ALIAS'));
    await t('promote-dirty').check(); // a developer's tree is dirty; the alias audit records the override
    await t('promote').click();
    await expect.poll(() => t('stream-link').count(), { timeout: 30_000 }).toBe(1);
    await expect.poll(() => page.locator('[data-testid="decisions"] li').count()).toBe(7);
    await expect.poll(info).toContain('promoted');
    await page.screenshot({ path: `${ARTIFACTS}/studio-promoted.png`, fullPage: true });

    await t('stream-link').click();
    await page.waitForURL(new RegExp(`serving=${env('QMACHINA_E2E_ALIAS')}`));
    await waitForBins(page, 5, 90_000);
    await page.screenshot({ path: `${ARTIFACTS}/studio-stream.png` });
    expect(errors).toEqual([]);
  }, 420_000);
});
