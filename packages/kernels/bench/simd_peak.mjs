#!/usr/bin/env node
/**
 * Measures the multiply-add peak of WebAssembly SIMD on this machine (bench/simd_peak.c,
 * compiled here with clang: `apt-get install clang lld`), the bound of a direct convolution
 * in WebAssembly: a conv3d layer of M multiply-adds cannot run faster than M / peak.
 *
 *   node packages/kernels/bench/simd_peak.mjs
 *
 * Prints the best of 5 runs in GMAC/s (10⁹ multiply-adds per second, one thread).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'simd-peak-'));
try {
  const out = join(dir, 'peak.wasm');
  const cc = spawnSync(
    process.env.CLANG ?? 'clang',
    [
      '--target=wasm32',
      '-O3',
      '-msimd128',
      '-nostdlib',
      '-Wl,--no-entry',
      '-o',
      out,
      join(here, 'simd_peak.c'),
    ],
    { encoding: 'utf8' },
  );
  if (cc.status !== 0) throw new Error(`clang failed: ${cc.stderr || cc.error}`);
  const { instance } = await WebAssembly.instantiate(readFileSync(out), {});
  const { memory, peak } = instance.exports;
  new Float32Array(memory.buffer, 1 << 16, 1024).fill(0.5);
  const n = 50_000_000;
  let best = 0;
  for (let r = 0; r < 5; r++) {
    const t0 = performance.now();
    if (!(peak(1 << 16, n, 1022) > 0)) throw new Error('unexpected result');
    best = Math.max(best, (n * 32) / (performance.now() - t0) / 1e6);
  }
  console.log(`WebAssembly SIMD multiply-add peak: ${best.toFixed(2)} GMAC/s (1 thread)`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
