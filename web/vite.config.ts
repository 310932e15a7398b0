import { resolve } from 'node:path';
import { defineConfig } from 'vitest/config';

// base './': every asset URL in dist/*.html is relative, so the Python serving process can mount web/dist/
// under any prefix (e.g. /ui/) without a rebuild. Each page is an input so the build emits all of them.
export default defineConfig({
  base: './',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    rollupOptions: {
      input: {
        index: resolve(import.meta.dirname, 'index.html'),
        registry: resolve(import.meta.dirname, 'registry.html'),
        experiments: resolve(import.meta.dirname, 'experiments.html'),
        login: resolve(import.meta.dirname, 'login.html'),
        studio: resolve(import.meta.dirname, 'studio.html'),
      },
    },
  },
  test: {
    include: ['src/**/*.test.ts'],
    environment: 'node',
  },
});
