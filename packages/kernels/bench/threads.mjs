#!/usr/bin/env node
/**
 * Thread-count benchmark of the threaded kernels (wasm backend, this package's kernels):
 * median ms of warp forward (warp_fwd: 2D or 3D, the output not read back, as the PyTorch
 * row) and forward + backward (tf.grads of sum(warp(image, field) · dy): linear,
 * zeros, C = 1, the random smooth field of bench/run.mjs, max displacement 3; warp_fwd_bwd_field:
 * the gradient w.r.t. the field only, the image being data, as in registration), local NCC
 * forward + backward (localNccLoss, window 9, gradients w.r.t. both images; a and b
 * independent uniform [0, 1] images as packages/losses/bench) and a U-Net layer, conv3d
 * 3×3×3 stride 2 'same', 32 → 32 channels on the half-resolution grid (forward + both
 * gradients), jacobianDeterminant (forward, the field of warp_fwd_bwd) and MIND-SSC forward +
 * backward (mindSsc, radius 1, dilation 2, of a uniform [0, 1] image: tf.grad of
 * sum(mindSsc(image) · dy), dy uniform [−1, 1], 12 channels) and LeakyReLU forward +
 * backward (slope 0.2, x [1, ...S, 16] uniform [−1, 1], dy likewise: a full-resolution U-Net
 * activation), at each thread count of
 * --threads (REGKIT_THREADS in a child process per
 * measurement, so peak RSS is per measurement). The PyTorch rows of the same ops at 1 and
 * at all threads: bench/threads_pytorch.py.
 *
 *   node bench/threads.mjs --save                              # 96x112x96, threads 1,2
 *   node bench/threads.mjs --threads 1,2,4 --sizes 96x112x96,160x192x224 --ops lncc_fwd_bwd
 *
 * Prints one JSON line per measurement ({"suite":"kernels","impl":"regkit","backend":"wasm",
 * "threads":N,…}); with --save also writes bench/results/threads.jsonl (--append keeps the
 * rows already there). The outputs are not read back (dataSync) inside the timing unless
 * --readback. Each measurement: warm-up calls (up to 5 within 2 s; 50 when a call takes
 * < 5 ms), then runs until 7 samples or REGKIT_BENCH_SECONDS (default 20 s); a sample is the
 * mean of enough calls for ~20 ms (1 call unless a call is shorter).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const OPS = [
  'warp_fwd',
  'warp_fwd_bwd',
  'warp_fwd_bwd_field',
  'lncc_fwd_bwd',
  'conv3d_s2_32_fwd_bwd',
  'jacobian_determinant',
  'mind_ssc_fwd_bwd',
  'leaky_relu_fwd_bwd',
];

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

async function one(op, size) {
  const core = await import('@regkit/core');
  const kernels = await import('../dist/index.js');
  const { localNccLoss, mindSsc } = await import('@regkit/losses');
  const { tf } = core;
  await core.initBackend('wasm');
  tf.env().set(core.PORTABLE_OPS_FLAG, false);
  await kernels.initKernels(); // thread count: REGKIT_THREADS
  kernels.registerKernels();
  const spatial = size.split('x').map(Number);
  let fn;
  if (op === 'warp_fwd' || op === 'warp_fwd_bwd' || op === 'warp_fwd_bwd_field') {
    const field = core.randomSmoothField(spatial, {
      maxDisplacement: 3,
      controlSpacing: 16,
      seed: 1,
    });
    const image = tf.randomUniform([1, ...spatial, 1], 0, 1, 'float32', 2);
    const dy = tf.randomUniform([1, ...spatial, 1], -1, 1, 'float32', 3);
    fn =
      op === 'warp_fwd'
        ? () => core.warp(image, field)
        : op === 'warp_fwd_bwd'
          ? () => tf.grads((a, b) => tf.sum(tf.mul(core.warp(a, b), dy)))([image, field])
          : () => tf.grad((b) => tf.sum(tf.mul(core.warp(image, b), dy)))(field);
  } else if (op === 'lncc_fwd_bwd') {
    const a = tf.randomUniform([1, ...spatial, 1], 0, 1, 'float32', 1);
    const b = tf.randomUniform([1, ...spatial, 1], 0, 1, 'float32', 2);
    fn = () => tf.grads((x, y) => localNccLoss(x, y, { window: 9 }))([a, b]);
  } else if (op === 'conv3d_s2_32_fwd_bwd') {
    const half = spatial.map((n) => Math.ceil(n / 2));
    const x = tf.randomUniform([1, ...half, 32], -1, 1, 'float32', 1);
    const w = tf.randomUniform([3, 3, 3, 32, 32], -0.1, 0.1, 'float32', 2);
    fn = () => tf.grads((a, k) => tf.sum(tf.conv3d(a, k, 2, 'same')))([x, w]);
  } else if (op === 'jacobian_determinant') {
    const field = core.randomSmoothField(spatial, {
      maxDisplacement: 3,
      controlSpacing: 16,
      seed: 1,
    });
    fn = () => core.jacobianDeterminant(field);
  } else if (op === 'mind_ssc_fwd_bwd') {
    const image = tf.randomUniform([1, ...spatial, 1], 0, 1, 'float32', 1);
    const dy = tf.randomUniform([1, ...spatial, 12], -1, 1, 'float32', 2);
    fn = () => tf.grad((x) => tf.sum(tf.mul(mindSsc(x, { radius: 1, dilation: 2 }), dy)))(image);
  } else if (op === 'leaky_relu_fwd_bwd') {
    const x = tf.randomUniform([1, ...spatial, 16], -1, 1, 'float32', 1);
    const dy = tf.randomUniform([1, ...spatial, 16], -1, 1, 'float32', 2);
    fn = () => tf.grad((t) => tf.leakyRelu(t, 0.2))(x, dy);
  } else throw new Error(`unknown op ${op}`);
  // the wasm backend runs kernels synchronously: the outputs are complete when the op returns.
  // Reading them back (dataSync: tfjs copies them off its heap into a fresh ArrayBuffer, on
  // one thread) is not timed unless REGKIT_BENCH_READBACK=1 (--readback), as in bench/conv.mjs
  // and as PyTorch's timings, which read nothing back
  const readback = process.env.REGKIT_BENCH_READBACK === '1';
  const once = () => {
    const out = tf.tidy(fn);
    for (const t of [out].flat()) {
      if (readback) t.dataSync();
      t.dispose();
    }
  };
  // calls per sample: 1, or enough for ~20 ms when a call is short (2D), so the median is
  // of per-call means over ≥ 20 ms instead of single sub-millisecond calls
  let batch = 1;
  const run = () => {
    const t0 = performance.now();
    for (let i = 0; i < batch; i++) once();
    return (performance.now() - t0) / batch;
  };
  const budget = Number(process.env.REGKIT_BENCH_SECONDS ?? 20) * 1000;
  const first = run();
  const times = first > budget / 2 ? [first] : [];
  const warm = performance.now();
  const warmCalls = first < 5 ? 50 : 5;
  for (let i = 1; times.length === 0 && i < warmCalls && performance.now() - warm < 2000; i++)
    run();
  if (times.length === 0) batch = Math.max(1, Math.round(20 / Math.max(run(), 1e-3)));
  const start = performance.now();
  while (times.length < 7 && (times.length < 1 || performance.now() - start < budget))
    times.push(run());
  times.sort((a, b) => a - b);
  return {
    suite: 'kernels',
    impl: 'regkit',
    backend: 'wasm',
    threads: kernels.kernelThreads(),
    op,
    size,
    ms: Number(times[Math.floor(times.length / 2)].toFixed(3)),
    runs: times.length,
    peak_rss_mb: Number((process.resourceUsage().maxRSS / 1024).toFixed(1)),
    ndim: spatial.length,
    readback,
    calls_per_sample: batch,
  };
}

if (process.argv[2] === '--one') {
  const [op, size] = process.argv.slice(3);
  process.stdout.write(`${JSON.stringify(await one(op, size))}\n`);
} else {
  const sizes = arg('sizes', '96x112x96').split(',');
  const ops = arg('ops', OPS.join(',')).split(',');
  const threads = arg('threads', '1,2').split(',').map(Number);
  const lines = [
    JSON.stringify({
      command: `node packages/kernels/bench/threads.mjs ${process.argv.slice(2).join(' ')}`.trim(),
    }),
  ];
  console.log(lines[0]);
  for (const size of sizes) {
    for (const op of ops) {
      for (const n of threads) {
        const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--one', op, size], {
          encoding: 'utf8',
          maxBuffer: 1 << 24,
          env: {
            ...process.env,
            REGKIT_THREADS: String(n),
            ...(process.argv.includes('--readback') ? { REGKIT_BENCH_READBACK: '1' } : {}),
          },
        });
        let line = r.stdout
          .trim()
          .split('\n')
          .filter((l) => l.startsWith('{'))
          .pop();
        if (r.status !== 0 || !line) {
          const why = (r.stderr || '')
            .split('\n')
            .filter((l) => l.trim())
            .slice(-4)
            .join(' | ');
          line = JSON.stringify({
            suite: 'kernels',
            impl: 'regkit',
            backend: 'wasm',
            threads: n,
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
  if (process.argv.includes('--save')) {
    const out = join(here, 'results', 'threads.jsonl');
    mkdirSync(dirname(out), { recursive: true });
    const kept =
      process.argv.includes('--append') && existsSync(out) ? readFileSync(out, 'utf8') : '';
    writeFileSync(`${out}.tmp`, `${kept}${lines.join('\n')}\n`);
    renameSync(`${out}.tmp`, out);
  }
}
