import { defineConfig } from 'vitest/config';

// Browser end-to-end tests (web/e2e/*.e2e.ts): headless Debian Chromium driven by playwright-core against a
// running serving process. tests/web/test_web_e2e.py prepares the lake, starts the server and runs this with
// QMACHINA_E2E_* set; run alone it fails fast naming what is missing.
export default defineConfig({
  test: {
    include: ['e2e/**/*.e2e.ts'],
    environment: 'node',
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 60_000,
  },
});
