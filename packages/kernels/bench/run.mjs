#!/usr/bin/env node
/**
 * Kernel benchmark: median ms and peak RSS of warp forward and forward+backward (linear,
 * zeros padding, C = 1, the field of packages/core/bench/run.mjs), composeFields and
 * integrateVelocity (7 squarings; core's definitions), and resizeField forward + backward
 * from the grid ceil(S/2) to S (`regkit register`'s parameter grid) on the cpu and wasm
 * backends, with this package's WebAssembly-SIMD kernels and, for comparison, with
 * @regkit/core's JavaScript kernels (what runs without this package). One child process per
 * measurement, so peak RSS is per measurement.
 *
 *   node bench/run.mjs                                   # everything
 *   node bench/run.mjs --sizes 192x192 --backends wasm --ops warp_fwd --kernels wasm-simd
 *   node bench/run.mjs --save --append --ops compose_fields --kernels wasm-simd
 *
 * Prints one JSON line per measurement ({"suite":"kernels","impl":"regkit","backend":…});
 * rows of core's JavaScript kernel have the backend "cpu (core JS kernel)" /
 * "wasm (core JS kernel)". With --save also writes bench/results/regkit.jsonl (with --append,
 * after the rows already there).
 * Each measurement: warm-up calls (up to 20 within 2 s; core's benchmark makes 1), then runs
 * until 7 runs or REGKIT_BENCH_SECONDS (default 20 s); when the first call alone exceeds half
 * that budget it is the single sample (runs = 1).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const OPS = [
  'warp_fwd',
  'warp_fwd_bwd',
  'compose_fields',
  'integrate_velocity',
  'resize_field_fwd_bwd',
];
const SIZES = ['192x192', '96x112x96', '160x192x224'];
const BACKENDS = ['cpu', 'wasm'];
const KERNELS = ['wasm-simd', 'core-js'];
const WARMUP_MS = 2000;

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

function backendLabel(backend, kernel) {
  return kernel === 'core-js' ? `${backend} (core JS kernel)` : backend;
}

async function one(backend, op, size, kernel) {
  const core = await import('@regkit/core');
  const kernels = await import('../dist/index.js');
  const { tf } = core;
  await core.initBackend(backend);
  tf.env().set(core.PORTABLE_OPS_FLAG, false);
  if (kernel === 'wasm-simd') {
    // one thread unless REGKIT_THREADS says (the PyTorch rows are at 1 thread)
    await kernels.initKernels({ threads: Number(process.env.REGKIT_THREADS ?? 1) });
    kernels.registerKernels();
  } else if (kernels.kernelsRegistered(backend)) {
    // initBackend() loaded @regkit/kernels by itself: put core's JavaScript kernels back
    for (const b of ['cpu', 'wasm']) {
      for (const k of [
        core.RegkitWarp,
        core.RegkitWarpGrad,
        core.RegkitResizeLinear,
        core.RegkitResizeLinearGrad,
      ])
        tf.unregisterKernel(k, b);
    }
    core.registerJsKernels();
  }
  if (kernels.kernelsRegistered(backend) !== (kernel === 'wasm-simd'))
    throw new Error(`the ${kernel} kernels are not the ones registered for ${backend}`);
  const spatial = size.split('x').map(Number);
  const field = core.randomSmoothField(spatial, {
    maxDisplacement: 3,
    controlSpacing: 16,
    seed: 1,
  });
  const image = tf.randomUniform([1, ...spatial, 1], 0, 1, 'float32', 2);
  const dy = tf.randomUniform([1, ...spatial, 1], -1, 1, 'float32', 3);
  const small = tf.mul(field, 0.3);
  const half = spatial.map((n) => Math.ceil(n / 2));
  const coarse = tf.randomNormal([1, ...half, spatial.length], 0, 1, 'float32', 4);
  const dyField = tf.randomNormal([1, ...spatial, spatial.length], 0, 1, 'float32', 5);
  const fns = {
    warp_fwd: () => core.warp(image, field),
    warp_fwd_bwd: () => tf.grads((a, b) => tf.sum(tf.mul(core.warp(a, b), dy)))([image, field]),
    // the definitions of packages/core/bench/run.mjs and pytorch_bench.py
    compose_fields: () => core.composeFields(field, small),
    integrate_velocity: () => core.integrateVelocity(field, { steps: 7 }),
    // backward seeded with dy directly, as torch's backward(dy)
    resize_field_fwd_bwd: () => tf.grad((u) => core.resizeField(u, spatial))(coarse, dyField),
  };
  const run = () => {
    const t0 = performance.now();
    const out = tf.tidy(fns[op]);
    for (const t of [out].flat()) {
      t.dataSync();
      t.dispose();
    }
    return performance.now() - t0;
  };
  const budget = Number(process.env.REGKIT_BENCH_SECONDS ?? 20) * 1000;
  const first = run();
  const times = first > budget / 2 ? [first] : [];
  // more warm-up calls while they are cheap: tfjs's own wasm module and the JavaScript around
  // the kernels take ~10-20 calls to reach steady speed (visible at 192x192 only)
  const warm = performance.now();
  for (let i = 1; times.length === 0 && i < 20 && performance.now() - warm < WARMUP_MS; i++) run();
  const start = performance.now();
  while (times.length < 7 && (times.length < 1 || performance.now() - start < budget))
    times.push(run());
  times.sort((a, b) => a - b);
  const ms = times[Math.floor(times.length / 2)];
  return {
    suite: 'kernels',
    impl: 'regkit',
    backend: backendLabel(backend, kernel),
    threads: kernel === 'wasm-simd' ? kernels.kernelThreads() : 1,
    op,
    size,
    ms: Number(ms.toFixed(3)),
    runs: times.length,
    peak_rss_mb: Number((process.resourceUsage().maxRSS / 1024).toFixed(1)),
    ndim: spatial.length,
  };
}

if (process.argv[2] === '--one') {
  const [backend, op, size, kernel = 'wasm-simd'] = process.argv.slice(3);
  process.stdout.write(`${JSON.stringify(await one(backend, op, size, kernel))}\n`);
} else {
  const sizes = arg('sizes', process.env.REGKIT_BENCH_SIZES ?? SIZES.join(',')).split(',');
  const ops = arg('ops', OPS.join(',')).split(',');
  const backends = arg('backends', BACKENDS.join(',')).split(',');
  const kernels = arg('kernels', KERNELS.join(',')).split(',');
  const save = process.argv.includes('--save');
  const append = process.argv.includes('--append');
  const lines = [
    JSON.stringify({
      command: `node packages/kernels/bench/run.mjs ${process.argv.slice(2).join(' ')}`.trim(),
    }),
  ];
  console.log(lines[0]);
  for (const size of sizes) {
    for (const backend of backends) {
      for (const op of ops) {
        for (const kernel of kernels) {
          const r = spawnSync(
            process.execPath,
            [fileURLToPath(import.meta.url), '--one', backend, op, size, kernel],
            { encoding: 'utf8', maxBuffer: 1 << 24 },
          );
          let line = r.stdout
            .trim()
            .split('\n')
            .filter((l) => l.startsWith('{'))
            .pop();
          if (r.status !== 0 || !line) {
            const why = (r.stderr || '')
              .split('\n')
              .filter((l) => l.trim() && !l.startsWith('Node.js v'))
              .slice(-4)
              .join(' | ');
            line = JSON.stringify({
              suite: 'kernels',
              impl: 'regkit',
              backend: backendLabel(backend, kernel),
              op,
              size,
              error: why || `exit ${r.status ?? r.signal}`,
            });
          }
          console.log(line);
          lines.push(line);
        }
      }
    }
  }
  if (save) {
    const out = join(here, 'results', 'regkit.jsonl');
    mkdirSync(dirname(out), { recursive: true });
    // --append keeps the rows already saved (a later row of the same op, size and backend
    // replaces an earlier one in BENCHMARKS.md)
    const kept = append && existsSync(out) ? readFileSync(out, 'utf8') : '';
    writeFileSync(`${out}.tmp`, `${kept}${lines.join('\n')}\n`);
    renameSync(`${out}.tmp`, out);
  }
}
