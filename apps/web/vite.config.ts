import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

// Cross-origin isolation (SharedArrayBuffer): the wasm backend then runs threads.
const isolation = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
};

export default defineConfig({
  // a static site: unknown paths answer 404 (no index.html fallback that would hide a missing .wasm)
  appType: 'mpa',
  // relative asset URLs: the built app works from any folder of a static server
  base: './',
  server: {
    headers: isolation,
    // the demo images live in packages/cli/data
    fs: { allow: [fileURLToPath(new URL('../..', import.meta.url))] },
  },
  preview: { headers: isolation },
  worker: { format: 'es' },
  build: { target: 'es2022', chunkSizeWarningLimit: 4096 },
});
