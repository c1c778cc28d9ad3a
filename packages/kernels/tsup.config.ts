import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['src/index.ts'],
  format: ['esm'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'es2022',
  // 'neutral': the embedded .wasm bytes are decoded by plain JavaScript (no Buffer), so the
  // bundle runs unchanged in Node and in browsers; every import is a peer (external).
  platform: 'neutral',
  external: ['@regkit/core', /^@tensorflow\//],
  loader: { '.wasm': 'binary' },
});
