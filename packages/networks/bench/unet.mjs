#!/usr/bin/env node
/**
 * The VoxelMorph-size U-Net (`createUnet({ ndim })`: encoder [16, 32, 32, 32], decoder
 * [32, 32, 32, 32, 32, 16, 16], 2 input channels) at batch 1 on the cpu and wasm backends with
 * @regkit/kernels, in one child process per measurement (peak RSS is per measurement):
 * - `unet_fwd`: one inference forward;
 * - `unet_train`: one training step: forward, loss mean(y²), backward, Adam update (lr 1e-4)
 *   of every weight.
 * Each after one warm-up run at the measured size (the first run at a size grows the heaps:
 * in 3D training it took 2.5× a later step), then the median of 3 to 5 runs (5 while within
 * REGKIT_BENCH_SECONDS, default 20 s).
 * The kernels' thread count is `--threads` (default: the cores, as a user gets). The PyTorch
 * twin is unet_pytorch.py (same ops, sizes, loss and optimiser).
 *
 *   node bench/unet.mjs [--ops unet_fwd,unet_train] [--sizes 160x192x224] [--backends cpu,wasm]
 *     [--threads 1,2] [--save]
 *
 * A size with 2 axes runs the 2D U-Net. Prints one JSON line per measurement
 * ({"suite":"networks","op":"unet_fwd",…}); --save appends to bench/results/regkit.jsonl
 * (a run's lines replace nothing: BENCHMARKS.md shows the newest row per op/size/backend/threads).
 */
import { spawnSync } from 'node:child_process';
import { appendFileSync, mkdirSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

async function one(backend, op, size, threads) {
  const core = await import('@regkit/core');
  const kernels = await import('@regkit/kernels');
  const { createUnet } = await import('../dist/index.js');
  const { tf } = core;
  await core.initBackend(backend);
  await kernels.initKernels({ threads });
  kernels.registerKernels();
  const spatial = size.split('x').map(Number);
  const ndim = spatial.length;
  const net = createUnet({ ndim, inChannels: 2, seed: 1 });
  const optimizer = tf.train.adam(1e-4);
  const step = (shape) => {
    const x = tf.randomUniform([1, ...shape, 2], 0, 1, 'float32', 3);
    const t0 = performance.now();
    if (op === 'unet_fwd') {
      const y = net.apply(x);
      y.dataSync();
      y.dispose();
    } else {
      const loss = optimizer.minimize(
        () => tf.mean(tf.square(net.apply(x))),
        true,
        net.trainableVariables,
      );
      loss.dataSync();
      loss.dispose();
    }
    const ms = performance.now() - t0;
    x.dispose();
    return ms;
  };
  step(spatial);
  const budget = Number(process.env.REGKIT_BENCH_SECONDS ?? 20) * 1000;
  const times = [];
  const start = performance.now();
  while (times.length < 5 && (times.length < 3 || performance.now() - start < budget)) {
    times.push(step(spatial));
  }
  times.sort((p, q) => p - q);
  return {
    suite: 'networks',
    impl: 'regkit',
    backend,
    threads: kernels.kernelThreads(),
    op,
    size,
    ms: Number(times[Math.floor(times.length / 2)].toFixed(1)),
    runs: times.length,
    peak_rss_mb: Number((process.resourceUsage().maxRSS / 1024).toFixed(1)),
    params: net.parameterCount,
    ndim,
  };
}

if (process.argv[2] === '--one') {
  const [backend, op, size, threads] = process.argv.slice(3);
  process.stdout.write(`${JSON.stringify(await one(backend, op, size, Number(threads)))}\n`);
} else {
  const sizes = arg('sizes', arg('size', '160x192x224')).split(',');
  const ops = arg('ops', 'unet_fwd').split(',');
  const backends = arg('backends', 'cpu,wasm').split(',');
  const threadCounts = arg('threads', String(availableParallelism())).split(',').map(Number);
  const lines = [
    JSON.stringify({
      command: `node packages/networks/bench/unet.mjs ${process.argv.slice(2).join(' ')}`.trim(),
    }),
  ];
  console.log(lines[0]);
  for (const op of ops) {
    for (const size of sizes) {
      for (const backend of backends) {
        for (const threads of threadCounts) {
          const r = spawnSync(
            process.execPath,
            [fileURLToPath(import.meta.url), '--one', backend, op, size, String(threads)],
            { encoding: 'utf8', maxBuffer: 1 << 24 },
          );
          let line = (r.stdout ?? '')
            .trim()
            .split('\n')
            .filter((l) => l.startsWith('{'))
            .pop();
          if (r.status !== 0 || !line) {
            const why = (r.stderr || '')
              .split('\n')
              .filter((l) => l.trim() && !l.startsWith('Node.js v') && !l.startsWith('    at '))
              .slice(-3)
              .join(' | ');
            line = JSON.stringify({
              suite: 'networks',
              impl: 'regkit',
              backend,
              threads,
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
  if (process.argv.includes('--save')) {
    const out = join(here, 'results', 'regkit.jsonl');
    mkdirSync(dirname(out), { recursive: true });
    appendFileSync(out, `${lines.join('\n')}\n`);
  }
}
