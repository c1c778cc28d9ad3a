#!/usr/bin/env node
/**
 * Losses benchmark: median ms and peak RSS of localNccLoss (window 9), mutualInformationLoss
 * (23 bins, Gaussian Parzen) — forward and forward+backward (tf.grads w.r.t. both images) —
 * and the mindSsc descriptor (radius 1, dilation 2, forward), on the cpu and wasm backends,
 * one child process per measurement (so peak RSS is per op). `lncc_portable_fwd` and
 * `lncc_portable_fwd_bwd` (only when named in --ops) time localNccLoss with
 * REGKIT_PORTABLE_OPS set: stock tfjs ops only, core's boxSum included, i.e. the path of
 * backends without the fused `RegkitLocalNcc` kernel (webgl, webgpu), for comparison.
 *
 *   node bench/run.mjs                       # all backends and ops at 96x112x96
 *   node bench/run.mjs --backends wasm --ops lncc_fwd,mi_fwd --sizes 91x109x91,96x112x96
 *   node bench/run.mjs --impls regkit,@regkit/kernels --ops lncc_fwd,lncc_fwd_bwd
 *
 * `--impls`: `regkit` (default) runs this package alone (its JavaScript kernels);
 * `@regkit/kernels` also registers the WebAssembly kernels of packages/kernels (built dist/),
 * as `initBackend()` does where that package is installed.
 *
 * Inputs: batch 1, C = 1, a and b independent uniform [0, 1] images (seeded tfjs
 * randomUniform). Prints one JSON line per measurement; with --save also merges them into
 * bench/results/regkit.jsonl: rows of the same (backend, op, size) are replaced, the others
 * kept with their command line (BENCHMARKS.md is generated from these files by
 * scripts/benchmarks-md.mjs). The PyTorch reference is bench/pytorch_bench.py.
 * Each measurement: 1 to 3 warm-up runs (more while they take under a quarter of the budget:
 * JavaScript kernels reach V8's optimising tier after a few calls), then runs until 7 runs or
 * REGKIT_BENCH_SECONDS (default 20 s); when the first warm-up alone exceeds half that budget
 * it is the single sample (runs = 1).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const OPS = ['lncc_fwd', 'lncc_fwd_bwd', 'mi_fwd', 'mi_fwd_bwd', 'mind_ssc_fwd'];
// on request only (--ops): slow on cpu, where the portable boxSum is a tfjs cumsum
const EXTRA_OPS = ['lncc_portable_fwd', 'lncc_portable_fwd_bwd'];
const SIZES = ['96x112x96'];
const BACKENDS = ['cpu', 'wasm'];

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

async function one(backend, op, size, impl = 'regkit') {
  const losses = await import('../dist/index.js');
  const core = await import('@regkit/core');
  const { tf } = core;
  await core.initBackend(backend);
  let threads = 1;
  if (impl === '@regkit/kernels') {
    const kernels = await import('../../kernels/dist/index.js');
    // one thread unless REGKIT_THREADS says (the PyTorch rows are at 1 thread)
    await kernels.initKernels({ threads: Number(process.env.REGKIT_THREADS ?? 1) });
    kernels.registerKernels();
    threads = kernels.kernelThreads();
  } else if (impl !== 'regkit') throw new Error(`unknown impl ${impl}`);
  const spatial = size.split('x').map(Number);
  const a = tf.randomUniform([1, ...spatial, 1], 0, 1, 'float32', 1);
  const b = tf.randomUniform([1, ...spatial, 1], 0, 1, 'float32', 2);
  const lncc = (x, y) => losses.localNccLoss(x, y, { window: 9 });
  const mi = (x, y) => losses.mutualInformationLoss(x, y);
  const fns = {
    lncc_fwd: () => lncc(a, b),
    lncc_fwd_bwd: () => tf.grads(lncc)([a, b]),
    lncc_portable_fwd: () => lncc(a, b),
    lncc_portable_fwd_bwd: () => tf.grads(lncc)([a, b]),
    mi_fwd: () => mi(a, b),
    mi_fwd_bwd: () => tf.grads(mi)([a, b]),
    mind_ssc_fwd: () => losses.mindSsc(a, { radius: 1, dilation: 2 }),
  };
  if (!fns[op] || !(OPS.includes(op) || EXTRA_OPS.includes(op)))
    throw new Error(`unknown op ${op}`);
  tf.env().set(core.PORTABLE_OPS_FLAG, op.includes('_portable_'));
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
  for (let i = 1, warm = first; i < 3 && warm < budget / 4; i++) warm += run();
  const start = performance.now();
  while (times.length < 7 && (times.length < 1 || performance.now() - start < budget))
    times.push(run());
  times.sort((p, q) => p - q);
  const ms = times[Math.floor(times.length / 2)];
  const peak = process.resourceUsage().maxRSS / 1024;
  return {
    suite: 'losses',
    impl,
    backend,
    threads,
    op,
    size,
    ms: Number(ms.toFixed(3)),
    runs: times.length,
    peak_rss_mb: Number(peak.toFixed(1)),
  };
}

/**
 * The lines of an earlier results file that this run does not replace: measurements of
 * another (suite, impl, backend, op, size), each after its command line; a command
 * line none of whose measurements are left is dropped.
 */
function keptLines(file, fresh) {
  if (!existsSync(file)) return [];
  // threads: 1 unless REGKIT_THREADS (a failed measurement has none)
  const key = (r) => [r.suite, r.impl, r.backend, r.threads ?? 1, r.op, r.size].join('|');
  const replaced = new Set(fresh.map(key));
  const groups = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    let rec;
    try {
      rec = JSON.parse(line);
    } catch {
      continue;
    }
    if (rec.command !== undefined && rec.op === undefined) groups.push({ command: line, rows: [] });
    else if (!replaced.has(key(rec))) {
      if (groups.length === 0) groups.push({ command: null, rows: [] });
      groups.at(-1).rows.push(line);
    }
  }
  return groups
    .filter((g) => g.rows.length > 0)
    .flatMap((g) => (g.command ? [g.command, ...g.rows] : g.rows));
}

if (process.argv[2] === '--one') {
  const [backend, op, size, impl] = process.argv.slice(3);
  process.stdout.write(`${JSON.stringify(await one(backend, op, size, impl))}\n`);
} else {
  const sizes = arg('sizes', SIZES.join(',')).split(',');
  const ops = arg('ops', OPS.join(',')).split(',');
  const backends = arg('backends', BACKENDS.join(',')).split(',');
  const impls = arg('impls', 'regkit').split(',');
  const save = process.argv.includes('--save');
  const lines = [
    JSON.stringify({
      command:
        `${process.env.REGKIT_BENCH_SECONDS ? `REGKIT_BENCH_SECONDS=${process.env.REGKIT_BENCH_SECONDS} ` : ''}node packages/losses/bench/run.mjs ${process.argv.slice(2).join(' ')}`.trim(),
    }),
  ];
  console.log(lines[0]);
  const cases = [];
  for (const size of sizes)
    for (const backend of backends)
      for (const op of ops) for (const impl of impls) cases.push([backend, op, size, impl]);
  for (const [backend, op, size, impl] of cases) {
    const r = spawnSync(
      process.execPath,
      [fileURLToPath(import.meta.url), '--one', backend, op, size, impl],
      {
        encoding: 'utf8',
        maxBuffer: 1 << 24,
      },
    );
    const line = (r.stdout || '')
      .trim()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .pop();
    if (r.status !== 0 || !line) {
      const why = (r.stderr || '').trim().split('\n').slice(-3).join(' | ');
      const fail = JSON.stringify({
        suite: 'losses',
        impl,
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
    const merged = [...keptLines(out, lines.slice(1).map(JSON.parse)), ...lines];
    writeFileSync(`${out}.tmp`, `${merged.join('\n')}\n`);
    renameSync(`${out}.tmp`, out);
  }
}
