import { defineConfig } from 'vitest/config';

// Browser end-to-end tests (web/e2e/*.e2e.ts): headless Debian Chromium driven by playwright-core against a
// running serving process. tests/web/test_web_e2e.py prepares the lake, starts the server and runs this with
// QMACHINA_E2E_* set; run alone it fails fast naming what is missing.
export default defineConfig({
  test: {
    // the studio's test needs Dagster: tests/web/test_studio_e2e.py runs it (`npm run e2e:studio`)
    // the gold editor's: tests/serving/test_studio_gold.py (`npm run e2e:studio-gold`)
    include: process.env['QMACHINA_E2E_STUDIO'] ? ['e2e/studio.e2e.ts']
      : process.env['QMACHINA_E2E_STUDIO_GOLD'] ? ['e2e/studio-gold.e2e.ts'] : ['e2e/**/*.e2e.ts'],
    exclude: process.env['QMACHINA_E2E_STUDIO'] || process.env['QMACHINA_E2E_STUDIO_GOLD'] ? []
      : ['e2e/studio.e2e.ts', 'e2e/studio-gold.e2e.ts'],
    environment: 'node',
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 60_000,
  },
});
