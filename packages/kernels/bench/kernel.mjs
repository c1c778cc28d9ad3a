#!/usr/bin/env node
/**
 * The warp kernels alone, one thread: calls warp_forward (all rows) and warp_backward_rows
 * (all rows as one chunk scattering into the whole image gradient) of a .wasm build directly
 * on the module's memory (no tfjs, no copies), linear interpolation, C = 1, a smooth field of
 * amplitude 3 voxels; median ms of REPS runs (default 15) after one warm-up call. Builds whose
 * memory is imported (the current one: shared) get a memory made here.
 *
 *   node bench/kernel.mjs                          # src/wasm/warp.wasm, all sizes
 *   node bench/kernel.mjs /tmp/scalar.wasm 192x192 # another build (e.g. -DWARP_SIMD=0)
 *   node bench/kernel.mjs src/wasm/warp.wasm 96x112x96 border
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const [
  file = fileURLToPath(new URL('../src/wasm/warp.wasm', import.meta.url)),
  sizes = '192x192,96x112x96,160x192x224',
  padding = 'zeros',
] = process.argv.slice(2);
const reps = Number(process.env.REPS ?? 15);
const compiled = await WebAssembly.compile(readFileSync(file));
const imported = WebAssembly.Module.imports(compiled).some((i) => i.kind === 'memory');
const memory = imported
  ? new WebAssembly.Memory({ initial: 32, maximum: 65536, shared: true })
  : undefined;
const instance = await WebAssembly.instantiate(compiled, imported ? { env: { memory } } : {});
const w = { ...instance.exports, memory: memory ?? instance.exports.memory };
const mode = padding === 'border' ? 2 : 0;

function median(fn) {
  fn();
  const t = [];
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    fn();
    t.push(performance.now() - t0);
  }
  t.sort((a, b) => a - b);
  return Number(t[t.length >> 1].toFixed(2));
}

for (const size of sizes.split(',')) {
  const S = size.split('x').map(Number);
  const nd = S.length;
  const [D, H, W] = nd === 3 ? S : [1, ...S];
  const n = D * H * W;
  let next = Math.ceil(w.heap_base() / 16) * 16;
  const need = next + n * 4 * (4 + 2 * nd) + 256;
  const have = w.memory.buffer.byteLength;
  if (need > have) w.memory.grow(Math.ceil((need - have) / 65536));
  const alloc = (count) => {
    const p = next;
    next += Math.ceil((count * 4) / 16) * 16;
    return p;
  };
  const [img, fld, out, dy, dImg, dFld] = [n, n * nd, n, n, n, n * nd].map(alloc);
  const f32 = (p, count) => new Float32Array(w.memory.buffer, p, count);
  let seed = 1;
  const rnd = () => {
    seed = (seed * 1664525 + 1013904223) >>> 0;
    return seed / 2 ** 32;
  };
  const image = f32(img, n);
  const grad = f32(dy, n);
  for (let i = 0; i < n; i++) {
    image[i] = rnd();
    grad[i] = rnd() - 0.5;
  }
  const u = f32(fld, n * nd);
  for (let i = 0; i < n; i++)
    for (let k = 0; k < nd; k++)
      u[i * nd + k] = 3 * Math.sin(i * 0.001 + k) * Math.cos(i * 0.00007 * (k + 1));
  const rows = D * H;
  const forward = median(() =>
    w.warp_forward(img, fld, out, 1, D, H, W, 1, D, H, W, nd, mode, 0, rows),
  );
  const backward = median(() =>
    w.warp_backward_rows(
      dy,
      img,
      fld,
      dImg,
      dFld,
      D,
      H,
      W,
      1,
      D,
      H,
      W,
      nd,
      mode,
      0,
      rows,
      0,
      (nd === 3 ? D : H) - 1,
    ),
  );
  console.log(JSON.stringify({ wasm: file.split('/').pop(), size, padding, forward, backward }));
}
