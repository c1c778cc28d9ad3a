#!/usr/bin/env node
/**
 * Metrics benchmark: median ms and peak RSS of hausdorff95 (all labels, spacing [1, 1, 1])
 * and dice (all labels) on 160x192x224 label maps with 10 labels, one child process per
 * measurement (so peak RSS is per op). Both metrics are plain JS after one download of the
 * label maps (backend "js"); the tensors live on the wasm backend (`--tensor-backend` to
 * change it).
 *
 *   node bench/run.mjs                       # hd95 and dice at 160x192x224
 *   node bench/run.mjs --ops hd95 --sizes 96x112x96
 *
 * Label maps (deterministic, same formula as bench/scipy_bench.py): label(x) = argmax over
 * k = 0..9 of f_k(x) = Σ_{j<3} sin(Σ_a c_kja·x_a + φ_kj) with c_kja = 2π·(1 + ((7k+3j+5a) mod 4)/2)/n_a
 * (1 to 2.5 periods per axis) and φ_kj = 1.7k + 2.3j (float64); b = a shifted by +2 voxels
 * along axis 0 (b[i] = a[max(i − 2, 0)]). Tensors `[1, ...S, 1]` int32.
 * Prints one JSON line per measurement; with --save also writes them to
 * bench/results/regkit.jsonl (BENCHMARKS.md is generated from these files by
 * scripts/benchmarks-md.mjs). Each measurement: 1 warm-up, then runs until 7 runs or
 * REGKIT_BENCH_SECONDS (default 20 s); when the warm-up alone exceeds half that budget it
 * is the single sample (runs = 1).
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const OPS = ['hd95', 'dice'];
const SIZES = ['160x192x224'];
const LABELS = 10;
const WAVES = 3;

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

/** The label maps a, b (Int32Array, C order) of bench/scipy_bench.py's `label_maps`. */
export function labelMaps(shape) {
  const [n0, n1, n2] = shape;
  const coef = [];
  const phase = [];
  for (let k = 0; k < LABELS; k++) {
    for (let j = 0; j < WAVES; j++) {
      coef.push(shape.map((n, a) => (2 * Math.PI * (1 + ((7 * k + 3 * j + 5 * a) % 4) / 2)) / n));
      phase.push(1.7 * k + 2.3 * j);
    }
  }
  const a = new Int32Array(n0 * n1 * n2);
  let i = 0;
  for (let x0 = 0; x0 < n0; x0++) {
    for (let x1 = 0; x1 < n1; x1++) {
      for (let x2 = 0; x2 < n2; x2++, i++) {
        let best = -Infinity;
        let arg = 0;
        for (let k = 0; k < LABELS; k++) {
          let f = 0;
          for (let j = 0; j < WAVES; j++) {
            const c = coef[k * WAVES + j];
            f += Math.sin(c[0] * x0 + c[1] * x1 + c[2] * x2 + phase[k * WAVES + j]);
          }
          if (f > best) {
            best = f;
            arg = k;
          }
        }
        a[i] = arg;
      }
    }
  }
  const plane = n1 * n2;
  const b = new Int32Array(a.length);
  for (let x0 = 0; x0 < n0; x0++) {
    const src = Math.max(x0 - 2, 0) * plane;
    b.set(a.subarray(src, src + plane), x0 * plane);
  }
  return [a, b];
}

async function one(backend, op, size) {
  const metrics = await import('../dist/index.js');
  const core = await import('@regkit/core');
  const { tf } = core;
  await core.initBackend(backend);
  const spatial = size.split('x').map(Number);
  const [la, lb] = labelMaps(spatial);
  const a = tf.tensor(la, [1, ...spatial, 1], 'int32');
  const b = tf.tensor(lb, [1, ...spatial, 1], 'int32');
  const fns = {
    hd95: () => metrics.hausdorff95(a, b, { spacing: [1, 1, 1] }),
    dice: () => metrics.dice(a, b),
  };
  if (!fns[op]) throw new Error(`unknown op ${op}`);
  let result;
  const run = async () => {
    const t0 = performance.now();
    result = await fns[op]();
    return performance.now() - t0;
  };
  const budget = Number(process.env.REGKIT_BENCH_SECONDS ?? 20) * 1000;
  const first = await run(); // warm-up, kept as the only sample when one run exceeds half the budget
  const times = first > budget / 2 ? [first] : [];
  const start = performance.now();
  while (times.length < 7 && (times.length < 1 || performance.now() - start < budget))
    times.push(await run());
  times.sort((p, q) => p - q);
  const ms = times[Math.floor(times.length / 2)];
  const peak = process.resourceUsage().maxRSS / 1024;
  process.stderr.write(`${op}: ${JSON.stringify(result.map((v) => Number(v.toFixed(6))))}\n`);
  return {
    suite: 'metrics',
    impl: 'regkit',
    backend: 'js',
    threads: 1,
    op,
    size,
    ms: Number(ms.toFixed(3)),
    runs: times.length,
    peak_rss_mb: Number(peak.toFixed(1)),
    labels: result.length,
  };
}

if (process.argv[2] === '--one') {
  const [backend, op, size] = process.argv.slice(3);
  process.stdout.write(`${JSON.stringify(await one(backend, op, size))}\n`);
} else if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  // the benchmark (not when another script imports labelMaps)
  const sizes = arg('sizes', SIZES.join(',')).split(',');
  const ops = arg('ops', OPS.join(',')).split(',');
  const backend = arg('tensor-backend', 'wasm');
  const save = process.argv.includes('--save');
  const env = process.env.REGKIT_BENCH_SECONDS
    ? `REGKIT_BENCH_SECONDS=${process.env.REGKIT_BENCH_SECONDS} `
    : '';
  const lines = [
    JSON.stringify({
      command:
        `${env}node packages/metrics/bench/run.mjs ${process.argv.slice(2).join(' ')}`.trim(),
    }),
  ];
  console.log(lines[0]);
  for (const size of sizes) {
    for (const op of ops) {
      const r = spawnSync(
        process.execPath,
        [fileURLToPath(import.meta.url), '--one', backend, op, size],
        {
          encoding: 'utf8',
          maxBuffer: 1 << 24,
        },
      );
      if (r.stderr) process.stderr.write(r.stderr);
      const line = (r.stdout || '')
        .trim()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .pop();
      if (r.status !== 0 || !line) {
        const why = (r.stderr || '').trim().split('\n').slice(-3).join(' | ');
        const fail = JSON.stringify({
          suite: 'metrics',
          impl: 'regkit',
          backend: 'js',
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
  }
  if (save) {
    const out = join(here, 'results', 'regkit.jsonl');
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(`${out}.tmp`, `${lines.join('\n')}\n`);
    renameSync(`${out}.tmp`, out);
  }
}
