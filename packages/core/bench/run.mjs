#!/usr/bin/env node
/**
 * Core op benchmark: median ms and peak RSS of warp (forward, forward+backward),
 * composeFields, integrateVelocity (7 steps) and jacobianDeterminant, on the cpu
 * and wasm backends, one child process per measurement (so peak RSS is per op).
 *
 *   node bench/run.mjs                       # all backends, ops and sizes
 *   node bench/run.mjs --sizes 192x192,96x112x96 --backends wasm --ops warp_fwd
 *
 * Prints one JSON line per measurement; with --save also writes them to
 * bench/results/regkit.jsonl (BENCHMARKS.md is generated from these files by
 * scripts/benchmarks-md.mjs). Rows "cpu (portable ops)" / "wasm (portable ops)" time the
 * composites of stock tfjs ops (tf.env REGKIT_PORTABLE_OPS) instead of the kernels.
 * Each measurement: 1 warm-up, then runs until 7 runs or REGKIT_BENCH_SECONDS (default 20 s);
 * when the warm-up alone exceeds half that budget it is the single sample (runs = 1).
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const OPS = [
  'warp_fwd',
  'warp_fwd_bwd',
  'compose_fields',
  'integrate_velocity',
  'jacobian_determinant',
];
const SIZES = ['192x192', '96x112x96', '160x192x224'];
const BACKENDS = ['cpu', 'wasm'];

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

async function one(backend, op, size, path) {
  const core = await import('../dist/index.js');
  const { tf } = core;
  await core.initBackend(backend);
  tf.env().set(core.PORTABLE_OPS_FLAG, path === 'portable');
  const spatial = size.split('x').map(Number);
  const nd = spatial.length;
  const field = core.randomSmoothField(spatial, {
    maxDisplacement: 3,
    controlSpacing: 16,
    seed: 1,
  });
  const image = tf.randomUniform([1, ...spatial, 1], 0, 1, 'float32', 2);
  const dy = tf.randomUniform([1, ...spatial, 1], -1, 1, 'float32', 3);
  const small = tf.mul(field, 0.3);
  const fns = {
    warp_fwd: () => core.warp(image, field),
    warp_fwd_bwd: () => tf.grads((a, b) => tf.sum(tf.mul(core.warp(a, b), dy)))([image, field]),
    compose_fields: () => core.composeFields(field, small),
    integrate_velocity: () => core.integrateVelocity(field, { steps: 7 }),
    jacobian_determinant: () => core.jacobianDeterminant(field),
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
  const first = run(); // warm-up, kept as the only sample when one run exceeds half the budget
  const times = first > budget / 2 ? [first] : [];
  const start = performance.now();
  while (times.length < 7 && (times.length < 1 || performance.now() - start < budget))
    times.push(run());
  times.sort((a, b) => a - b);
  const ms = times[Math.floor(times.length / 2)];
  const peak = process.resourceUsage().maxRSS / 1024;
  return {
    suite: 'core',
    impl: 'regkit',
    backend: path === 'portable' ? `${backend} (portable ops)` : backend,
    threads: 1,
    op,
    size,
    ms: Number(ms.toFixed(3)),
    runs: times.length,
    peak_rss_mb: Number(peak.toFixed(1)),
    ndim: nd,
  };
}

if (process.argv[2] === '--one') {
  const [backend, op, size, path = 'kernel'] = process.argv.slice(3);
  process.stdout.write(`${JSON.stringify(await one(backend, op, size, path))}\n`);
} else {
  const sizes = arg('sizes', process.env.REGKIT_BENCH_SIZES ?? SIZES.join(',')).split(',');
  const ops = arg('ops', OPS.join(',')).split(',');
  const backends = arg('backends', BACKENDS.join(',')).split(',');
  // the portable composites (stock tfjs ops) are timed for warp only, at the two smaller
  // sizes: they are the reference path and take minutes at 160x192x224
  const portable = !process.argv.includes('--no-portable');
  const save = process.argv.includes('--save');
  const lines = [
    JSON.stringify({
      command: `node packages/core/bench/run.mjs ${process.argv.slice(2).join(' ')}`.trim(),
    }),
  ];
  console.log(lines[0]);
  const cases = [];
  for (const size of sizes) {
    for (const backend of backends) {
      for (const op of ops) {
        cases.push([backend, op, size, 'kernel']);
        if (portable && op.startsWith('warp') && size !== '160x192x224')
          cases.push([backend, op, size, 'portable']);
      }
    }
  }
  for (const [backend, op, size, path] of cases) {
    const r = spawnSync(
      process.execPath,
      [fileURLToPath(import.meta.url), '--one', backend, op, size, path],
      {
        encoding: 'utf8',
        maxBuffer: 1 << 24,
      },
    );
    const line = r.stdout
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .pop();
    if (r.status !== 0 || !line) {
      const why = (r.stderr || '').trim().split('\n').slice(-3).join(' | ');
      const fail = JSON.stringify({
        suite: 'core',
        impl: 'regkit',
        backend,
        op,
        size,
        error: why || `exit ${r.status}`,
      });
      console.log(fail);
      lines.push(fail);
      continue;
    }
    console.log(line);
    lines.push(line);
  }
  if (save) {
    const out = join(here, 'results', 'regkit.jsonl');
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(`${out}.tmp`, `${lines.join('\n')}\n`);
    renameSync(`${out}.tmp`, out);
  }
}
