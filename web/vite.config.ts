import { defineConfig } from 'vitest/config';

// base './': every asset URL in dist/index.html is relative, so the Python serving process can mount
// web/dist/ under any prefix (e.g. /ui/) without a rebuild.
export default defineConfig({
  base: './',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
  },
  test: {
    include: ['src/**/*.test.ts'],
    environment: 'node',
  },
});
