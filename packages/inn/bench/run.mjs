#!/usr/bin/env node
/**
 * @regkit/inn benchmark: median ms and peak RSS, one child process per measurement.
 *
 *   translator_fwd_inv     translate + translateBack of a 1-channel image, INNReg's default
 *                          translator (squeeze, 8 coupling blocks, DDWConv dense-block subnets)
 *   translator_dense_fwd_inv  the same with plain dense-block subnets
 *   translator_train_step  one Adam step of L1(T(x), y) + 0.1 L1(T⁻¹(T(x)), x) w.r.t. all weights,
 *                          with recomputeGradients (plain back-propagation runs out of wasm
 *                          memory at 128×128)
 *   depthwise3d_fwd(_bwd)  depthwiseConvPerSample, 3D, 132 channels, 7×7×7 (input and kernel grads)
 *
 *   node bench/run.mjs          # wasm: every op; cpu: the depthwise3d ops (translators take minutes there)
 *   node bench/run.mjs --backends wasm --ops translator_fwd_inv --sizes 128x128
 *   node bench/run.mjs --save   # also merges the rows into bench/results/regkit.jsonl
 *
 * Sizes: translator ops take HxW or DxHxW (default 128x128), depthwise3d ops DxHxW (default
 * 16x16x16). @regkit/kernels is registered on cpu and wasm, as the regkit CLI does. Each
 * measurement: one warm-up run, then runs until 5 runs or REGKIT_BENCH_SECONDS (default 20 s).
 * bench/depthwise3d.mjs compares the 3D depthwise formulations.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const OPS = [
  'translator_fwd_inv',
  'translator_dense_fwd_inv',
  'translator_train_step',
  'depthwise3d_fwd',
  'depthwise3d_fwd_bwd',
];

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

async function one(backend, op, size) {
  const inn = await import('../dist/index.js');
  const core = await import('@regkit/core');
  const { tf } = core;
  await core.initBackend(backend);
  const kernels = await import('@regkit/kernels');
  await kernels.initKernels();
  kernels.registerKernels();
  const spatial = size.split('x').map(Number);
  const nd = spatial.length;
  let fn;
  let extra = {};
  if (op.startsWith('translator')) {
    const t = inn.createInvertibleTranslator({
      ndim: nd,
      channels: 1,
      subnet: op === 'translator_dense_fwd_inv' ? 'dense' : 'ddw',
      recomputeGradients: op === 'translator_train_step',
    });
    extra = { parameters: t.parameterCount };
    const x = tf.randomUniform([1, ...spatial, 1], 0, 1, 'float32', 1);
    const y = tf.randomUniform([1, ...spatial, 1], 0, 1, 'float32', 2);
    if (op === 'translator_train_step') {
      const optimizer = tf.train.adam(2e-4);
      fn = () =>
        optimizer.minimize(
          () => {
            const fake = t.translate(x);
            const recon = t.translateBack(fake);
            return tf.add(
              tf.mean(tf.abs(tf.sub(fake, y))),
              tf.mul(tf.mean(tf.abs(tf.sub(recon, x))), 0.1),
            );
          },
          true,
          t.trainableVariables,
        );
    } else fn = () => t.translateBack(t.translate(x));
  } else {
    const c = 132;
    const x = tf.randomUniform([1, ...spatial, c], -1, 1, 'float32', 1);
    const k = tf.randomUniform([1, 7, 7, 7, c], -1, 1, 'float32', 2);
    extra = { channels: c, kernel: 7 };
    fn =
      op === 'depthwise3d_fwd'
        ? () => inn.depthwiseConvPerSample(x, k)
        : () => tf.grads((a, b) => tf.sum(tf.square(inn.depthwiseConvPerSample(a, b))))([x, k]);
  }
  const run = () => {
    const t0 = performance.now();
    const out = fn();
    for (const o of [out].flat()) {
      o.dataSync();
      o.dispose();
    }
    return performance.now() - t0;
  };
  const budget = Number(process.env.REGKIT_BENCH_SECONDS ?? 20) * 1000;
  const first = run();
  const times = first > budget / 2 ? [first] : [];
  const start = performance.now();
  while (times.length < 5 && (times.length < 1 || performance.now() - start < budget))
    times.push(run());
  times.sort((p, q) => p - q);
  return {
    suite: 'inn',
    impl: 'regkit',
    backend,
    threads: 1,
    op,
    size,
    ms: Number(times[Math.floor(times.length / 2)].toFixed(3)),
    runs: times.length,
    peak_rss_mb: Number((process.resourceUsage().maxRSS / 1024).toFixed(1)),
    ...extra,
  };
}

if (process.argv[2] === '--one') {
  const [backend, op, size] = process.argv.slice(3);
  process.stdout.write(`${JSON.stringify(await one(backend, op, size))}\n`);
} else {
  const opsArg = arg('ops', null);
  const backends = arg('backends', 'cpu,wasm').split(',');
  const sizesArg = arg('sizes', null);
  const lines = [
    JSON.stringify({
      command:
        `${process.env.REGKIT_BENCH_SECONDS ? `REGKIT_BENCH_SECONDS=${process.env.REGKIT_BENCH_SECONDS} ` : ''}node packages/inn/bench/run.mjs ${process.argv.slice(2).join(' ')}`.trim(),
    }),
  ];
  console.log(lines[0]);
  for (const backend of backends) {
    const ops = opsArg
      ? opsArg.split(',')
      : OPS.filter((op) => backend === 'wasm' || op.startsWith('depthwise3d'));
    for (const op of ops) {
      if (!OPS.includes(op)) throw new Error(`unknown op ${op} (one of ${OPS.join(', ')})`);
      const sizes = sizesArg
        ? sizesArg.split(',')
        : [op.startsWith('translator') ? '128x128' : '16x16x16'];
      for (const size of sizes) {
        const r = spawnSync(
          process.execPath,
          [fileURLToPath(import.meta.url), '--one', backend, op, size],
          {
            encoding: 'utf8',
            maxBuffer: 1 << 26,
          },
        );
        const line = r.stdout.split('\n').find((l) => l.startsWith('{'));
        const rec = line
          ? line
          : JSON.stringify({
              suite: 'inn',
              impl: 'regkit',
              backend,
              op,
              size,
              error: (r.stderr || '').slice(-300),
            });
        console.log(rec);
        lines.push(rec);
      }
    }
  }
  if (process.argv.includes('--save')) {
    // earlier rows of other (backend, op, size) are kept, after their command line
    const file = join(here, 'results', 'regkit.jsonl');
    const key = (r) => [r.backend, r.op, r.size].join('|');
    const fresh = new Set(lines.slice(1).map((l) => key(JSON.parse(l))));
    const kept = [];
    if (existsSync(file)) {
      for (const line of readFileSync(file, 'utf8')
        .split('\n')
        .filter((l) => l.trim())) {
        const rec = JSON.parse(line);
        if (rec.command !== undefined) kept.push({ command: line, rows: [] });
        else if (!fresh.has(key(rec))) kept.at(-1)?.rows.push(line);
      }
    }
    const old = kept.filter((g) => g.rows.length > 0).flatMap((g) => [g.command, ...g.rows]);
    mkdirSync(join(here, 'results'), { recursive: true });
    writeFileSync(file, `${[...old, ...lines].join('\n')}\n`);
  }
}
