/**
 * Model Studio's Gold DSL editor in the browser (tests/serving/test_studio_gold.py runs it against a serving
 * process over one synthetic day whose dataset is built; no Dagster): a bad spec shows its error at the node's
 * line, a shipped spec loads into the editor, the example spec validates and its preview renders a row and a histogram per output.
 *
 *   QMACHINA_E2E_PIPELINE   the pipeline to pick (its first day built)
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Browser } from 'playwright-core';
import { ARTIFACTS, env, launch, openPage } from './helpers';

describe('model studio: gold DSL editor', () => {
  let browser: Browser;
  beforeAll(async () => { browser = await launch(); });
  afterAll(async () => { await browser?.close(); });

  it('locates a bad spec at its node, then previews a good one', async () => {
    const { page, errors } = await openPage(browser, '/studio.html');
    const t = (id: string) => page.locator(`[data-testid="${id}"]`);
    await expect.poll(() => t('studio-status').textContent(), { timeout: 30_000 }).toMatch(/create a session|session /);
    await t('new-session').click();
    await expect.poll(() => t('session-info').textContent()).toContain('draft');
    await t('data-pipeline').selectOption(env('QMACHINA_E2E_PIPELINE'));
    await t('commit-data').click();
    await expect.poll(() => t('session-info').textContent()).toContain('next: gold');

    await t('gold-dsl').selectOption('depth_imbalance');  // Load: a shipped spec's text into the editor
    await t('gold-load').click();
    await expect.poll(() => t('gold-dsl-result').textContent()).toContain('loaded depth_imbalance · spec ');
    expect(await t('gold-dsl-text').inputValue()).toMatch(/^[\s\S]*nodes:/);
    expect(await page.locator('[data-testid="gold-editor"]').getAttribute('open')).not.toBeNull();
    await t('gold-dsl').selectOption('');
    await t('gold-example').click();
    const good = await t('gold-dsl-text').inputValue();
    const bad = good.replace('field: ask_depth', 'field: ask_dept');
    await t('gold-dsl-text').fill(bad);
    await t('gold-validate').click();
    const err = page.locator('[data-testid="gold-dsl-errors"] li[data-node="ask_depth"]');
    await expect.poll(() => err.count()).toBe(1);
    const line = bad.split('\n').findIndex((l) => l.trimStart().startsWith('ask_depth:')) + 1;
    expect(await err.getAttribute('data-line')).toBe(String(line));
    expect(await err.textContent()).toContain("silver field 'ask_dept'");
    expect(await page.locator(`[data-testid="gold-dsl-gutter"] .err[data-line="${line}"]`).count()).toBe(1);

    await t('gold-dsl-text').fill(good);
    await t('gold-preview-bins').fill('1000');
    await t('gold-preview').click();
    await expect.poll(() => page.locator('[data-testid="gold-preview-table"] tbody tr').count(), { timeout: 60_000 }).toBe(2);
    expect(await page.locator('[data-testid="gold-dsl-errors"] li').count()).toBe(0);
    expect(await page.locator('[data-testid="gold-preview-table"] tr[data-output="depth_tilt"] canvas').count()).toBe(1);
    expect(await t('gold-dsl-result').textContent()).toContain('preview of 2 output(s)');
    expect(await t('gold-use-editor').isChecked()).toBe(true);
    await t('commit-gold').click();
    await expect.poll(() => t('session-info').textContent()).toContain('next: signal');
    await page.screenshot({ path: `${ARTIFACTS}/studio-gold.png`, fullPage: true });
    expect(errors).toEqual([]);
  }, 120_000);
});
