#!/usr/bin/env node
/**
 * Convolution kernel benchmark: median ms and peak RSS of conv3d forward and forward +
 * backward (input and filter gradients, via tf.grads with a given dy) with the WebAssembly
 * convolution kernels (src/conv.ts + csrc/conv.c in src/wasm/warp.wasm) registered on the tfjs cpu and
 * wasm backends. Sizes: a 64^3 test layer and the VoxelMorph U-Net's 3x3x3 'same' layers
 * (encoder stride 2, the full-resolution decoder layer stride 1). One child process per
 * measurement, so peak RSS is per measurement. PyTorch's figures: bench/conv_pytorch.py.
 *
 *   node bench/conv.mjs                                     # everything (takes minutes)
 *   node bench/conv.mjs --sizes 1x64x64x64x8_k3_8to16 --backends wasm --ops conv3d_fwd
 *   node bench/conv.mjs --impls regkit,tfjs-stock --sizes 1x64x64x64x8_k3_8to16
 *
 * Prints one JSON line per measurement:
 *   {"suite":"kernels","impl":"regkit","backend":"wasm","op":"conv3d_fwd","size":…,"ms":…,
 *    "runs":…,"peak_rss_mb":…}
 * (impl "tfjs-stock": the stock tfjs kernels, for comparison; slow at the large sizes).
 * With --save also appends to bench/results/conv.jsonl. Each measurement: 1 warm-up, then runs
 * until 7 runs or REGKIT_BENCH_SECONDS (default 20 s); when the warm-up alone exceeds half
 * that budget it is the single sample (runs = 1).
 *
 * The kernels come from the built package (dist/, `initKernels` / `createConvKernels`): build
 * first (`pnpm build`). One thread (the figures are single-thread), unless REGKIT_THREADS says.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

/** name → [input shape, Cout, stride] (3x3x3 filters, 'same' padding). */
const SIZES = {
  '1x64x64x64x8_k3_8to16': [[1, 64, 64, 64, 8], 16, 1],
  '1x160x192x224x2_k3_2to16_s2': [[1, 160, 192, 224, 2], 16, 2],
  '1x80x96x112x16_k3_16to32_s2': [[1, 80, 96, 112, 16], 32, 2],
  '1x40x48x56x32_k3_32to32_s2': [[1, 40, 48, 56, 32], 32, 2],
  '1x20x24x28x32_k3_32to32_s2': [[1, 20, 24, 28, 32], 32, 2],
  '1x160x192x224x48_k3_48to16': [[1, 160, 192, 224, 48], 16, 1],
};
const OPS = ['conv3d_fwd', 'conv3d_fwd_bwd'];
const BACKENDS = ['cpu', 'wasm'];
const IMPLS = ['regkit'];

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

async function one(backend, op, size, impl) {
  const core = await import('@regkit/core');
  const { tf } = core;
  await core.initBackend(backend);
  if (impl === 'regkit') {
    const conv = await import('../dist/index.js');
    await conv.initKernels({ threads: Number(process.env.REGKIT_THREADS ?? 1) });
    for (const config of conv.createConvKernels()) core.replaceKernel(config);
  }
  const [xShape, cout, stride] = SIZES[size];
  const wShape = [3, 3, 3, xShape[4], cout];
  const x = tf.randomUniform(xShape, -1, 1, 'float32', 1);
  const w = tf.randomUniform(wShape, -0.2, 0.2, 'float32', 2);
  const conv = (a, b) => tf.conv3d(a, b, stride, 'same');
  const outShape = tf.backend_util.computeConv3DInfo(xShape, wShape, stride, 1, 'same').outShape;
  const dy = tf.randomUniform(outShape, -1, 1, 'float32', 3);
  const fns = {
    conv3d_fwd: () => conv(x, w),
    conv3d_fwd_bwd: () => tf.grads(conv)([x, w], dy),
  };
  // the cpu and wasm backends run kernels synchronously: the outputs are complete when the
  // op returns, so the time excludes reading them back, which a network never does between
  // layers (dataSync on wasm copies the output off its heap: 11 ms for the 64³×16 output,
  // 47 ms for 80×96×112×16; PyTorch's timings include no such copy either)
  if (backend !== 'cpu' && backend !== 'wasm') throw new Error(`${backend} is not synchronous`);
  const run = () => {
    const t0 = performance.now();
    const out = tf.tidy(fns[op]);
    const ms = performance.now() - t0;
    for (const t of [out].flat()) t.dispose();
    return ms;
  };
  const budget = Number(process.env.REGKIT_BENCH_SECONDS ?? 20) * 1000;
  const first = run();
  const times = first > budget / 2 ? [first] : [];
  const start = performance.now();
  while (times.length < 7 && (times.length < 1 || performance.now() - start < budget))
    times.push(run());
  times.sort((a, b) => a - b);
  const ms = times[Math.floor(times.length / 2)];
  return {
    suite: 'kernels',
    impl,
    backend,
    threads: 1,
    op,
    size,
    ms: Number(ms.toFixed(3)),
    runs: times.length,
    peak_rss_mb: Number((process.resourceUsage().maxRSS / 1024).toFixed(1)),
  };
}

if (process.argv[2] === '--one') {
  const [backend, op, size, impl = 'regkit'] = process.argv.slice(3);
  process.stdout.write(`${JSON.stringify(await one(backend, op, size, impl))}\n`);
} else {
  const sizes = arg('sizes', Object.keys(SIZES).join(',')).split(',');
  for (const s of sizes) if (!SIZES[s]) throw new Error(`unknown size ${s}`);
  const ops = arg('ops', OPS.join(',')).split(',');
  const backends = arg('backends', BACKENDS.join(',')).split(',');
  const impls = arg('impls', IMPLS.join(',')).split(',');
  const save = process.argv.includes('--save');
  const lines = [
    JSON.stringify({
      command: `node packages/kernels/bench/conv.mjs ${process.argv.slice(2).join(' ')}`.trim(),
    }),
  ];
  console.log(lines[0]);
  for (const size of sizes) {
    for (const backend of backends) {
      for (const op of ops) {
        for (const impl of impls) {
          const r = spawnSync(
            process.execPath,
            [
              '--max-old-space-size=8192',
              fileURLToPath(import.meta.url),
              '--one',
              backend,
              op,
              size,
              impl,
            ],
            { encoding: 'utf8', maxBuffer: 1 << 24 },
          );
          let line = r.stdout
            .trim()
            .split('\n')
            .filter((l) => l.startsWith('{'))
            .pop();
          if (r.status !== 0 || !line) {
            // the error's own line, not the stack or Node's banner
            const why = (r.stderr || '')
              .split('\n')
              .filter((l) => /^\w*Error\b/.test(l.trim()))
              .slice(-1)
              .join(' | ');
            line = JSON.stringify({
              suite: 'kernels',
              impl,
              backend,
              op,
              size,
              error: why || `exit ${r.status}`,
            });
          }
          console.log(line);
          lines.push(line);
        }
      }
    }
  }
  if (save) {
    const out = join(here, 'results', 'conv.jsonl');
    mkdirSync(dirname(out), { recursive: true });
    // append: earlier measurements stay (BENCHMARKS.md keeps the latest row per op and size)
    const old = existsSync(out) ? readFileSync(out, 'utf8') : '';
    writeFileSync(`${out}.tmp`, `${old}${lines.join('\n')}\n`);
    renameSync(`${out}.tmp`, out);
  }
}
