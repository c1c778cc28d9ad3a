#!/usr/bin/env node
/**
 * Forward pass of the VoxelMorph-size 3D U-Net (`createUnet({ ndim: 3 })`: encoder
 * [16, 32, 32, 32], decoder [32, 32, 32, 32, 32, 16, 16], 2 input channels) at batch 1,
 * 160×192×224, on the cpu and wasm backends with @regkit/kernels: wall time of one forward
 * (after one warm-up forward at 32×32×32) and peak RSS of the process. The PyTorch twin is
 * unet_pytorch.py. One child process per backend, so peak RSS is per measurement.
 *
 *   node bench/unet.mjs [--backends cpu,wasm] [--size 160x192x224] [--save]
 *
 * Prints one JSON line per backend ({"suite":"networks","op":"unet_fwd",…}); --save writes
 * bench/results/regkit.jsonl.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

async function one(backend, size) {
  const core = await import('@regkit/core');
  const kernels = await import('@regkit/kernels');
  const { createUnet } = await import('../dist/index.js');
  const { tf } = core;
  await core.initBackend(backend);
  await kernels.initKernels();
  kernels.registerKernels();
  const spatial = size.split('x').map(Number);
  const net = createUnet({ ndim: 3, inChannels: 2, seed: 1 });
  const forward = (shape) => {
    const x = tf.randomUniform([1, ...shape, 2], 0, 1, 'float32', 3);
    const t0 = performance.now();
    const y = net.apply(x);
    y.dataSync();
    const ms = performance.now() - t0;
    tf.dispose([x, y]);
    return ms;
  };
  forward([32, 32, 32]);
  const ms = forward(spatial);
  return {
    suite: 'networks',
    impl: 'regkit',
    backend,
    threads: 1,
    op: 'unet_fwd',
    size,
    ms: Number(ms.toFixed(1)),
    runs: 1,
    peak_rss_mb: Number((process.resourceUsage().maxRSS / 1024).toFixed(1)),
    params: net.parameterCount,
  };
}

if (process.argv[2] === '--one') {
  process.stdout.write(`${JSON.stringify(await one(process.argv[3], process.argv[4]))}\n`);
} else {
  const size = arg('size', '160x192x224');
  const backends = arg('backends', 'cpu,wasm').split(',');
  const lines = [
    JSON.stringify({
      command: `node packages/networks/bench/unet.mjs ${process.argv.slice(2).join(' ')}`.trim(),
    }),
  ];
  console.log(lines[0]);
  for (const backend of backends) {
    const r = spawnSync(
      process.execPath,
      [fileURLToPath(import.meta.url), '--one', backend, size],
      {
        encoding: 'utf8',
        maxBuffer: 1 << 24,
      },
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
        op: 'unet_fwd',
        size,
        error: why || `exit ${r.status ?? r.signal}`,
      });
    }
    console.log(line);
    lines.push(line);
  }
  if (process.argv.includes('--save')) {
    const out = join(here, 'results', 'regkit.jsonl');
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(`${out}.tmp`, `${lines.join('\n')}\n`);
    renameSync(`${out}.tmp`, out);
  }
}
