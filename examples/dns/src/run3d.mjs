#!/usr/bin/env node
/**
 * DNS / MASR-Net in 3D (Mok et al., CVPR 2024): instance optimisation with the bundled 3D
 * MASR-Net (IO-DNS) against IO-MIND, IO-MI and elastix (affine + B-spline, Mattes MI:
 * packages/cli/bench/elastix/*.txt) on multi-modal volume pairs with known deformations, and the
 * paper's ablation in small (random-init CNN → + DNS layer → + contrastive training →
 * + smoothing ψ_σ), every IO arm through the same `registerImages` path.
 *
 *   node src/run3d.mjs            # 36×44×36 volumes, 5 test deformations per task, λ grids
 *   node src/run3d.mjs --quick    # a check: BraTS T1 → T2 only, 28×32×28, 2 deformations, no grid
 *   node src/run3d.mjs --methods mind --out a && node src/run3d.mjs --methods dns --reuse a/results.json
 *                                 # arms run apart (same settings) and tabled together
 *   node src/run3d.mjs --test-from 3 --test 2 --lambda-from a/results.json --out b
 *                                 # 2 more test deformations at the λ that run a chose
 *
 * Tasks (subjects never trained on): BraTS T1 → T2 and T1 → FLAIR (read-only; labels =
 * tumour classes + brain), the VoxelMorph T1 → a CT-like non-monotone remap of it (read-only;
 * FreeSurfer aseg labels). Each pair deforms the fixed and the moving volume by independent
 * random cubic B-spline fields (test seeds 100000 + r, validation seeds 200000 + r). Every IO
 * arm: no affine, displacement on each level's grid, 3 levels × [100, 80, 50] Adam iterations;
 * its λ scale is chosen from a grid on the validation deformation(s) (mean Dice), the grid and
 * the choice printed. The ablation arms run on the tasks of --ablation-tasks (default t2). Reported per task: mean ± standard error over the test deformations, and
 * the paired difference of each arm's Dice against IO-DNS on the same pairs.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { tf, warp } from '@regkit/core';
import { initExampleBackend } from '@regkit/example-common/backend';
import { markdownTable } from '@regkit/example-common/evaluate';
import { disposePair, makePair } from '@regkit/example-common/slices';
import { meanAndSe, pairedDifference, pm } from '@regkit/example-common/stats';
import { readNifti, writeVolume } from '@regkit/io';
import { foldingPercent, hausdorff95, meanDice, ncc } from '@regkit/metrics';
import { createMasrNet, loadMasrNet } from '@regkit/networks';
import { DNS_PAPER_SCHEDULE, dnsRegistrationOptions, registerImages } from '@regkit/register';
import {
  ASEG_STRUCTURES,
  BRATS_STRUCTURES,
  bratsVolumeDataset,
  ctLikeDataset,
  SIZES,
} from './data3d.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    tasks: { type: 'string' },
    'ablation-tasks': { type: 'string', default: 't2' },
    methods: {
      type: 'string',
      default: 'dns,dns-nosmooth,dns-random,cnn-random,mind,mi,elastix',
    },
    weights: { type: 'string' },
    out: { type: 'string' },
    backend: { type: 'string' },
    'elastix-threads': { type: 'string', default: '1' },
    reuse: { type: 'string' },
    test: { type: 'string' },
    'test-from': { type: 'string', default: '0' },
    'lambda-from': { type: 'string' },
  },
});
const started = performance.now();
const quick = args.quick;
const S = quick
  ? {
      size: SIZES.quick,
      test: 2,
      validation: 0,
      grid: [1],
      pair: { maxDisplacement: 3, controlSpacing: 10 },
    }
  : {
      size: SIZES.full,
      test: 5,
      validation: 1,
      grid: [1, 3],
      pair: { maxDisplacement: 3, controlSpacing: 10 },
    };
if (args.test) S.test = Number(args.test);
const testFrom = Number(args['test-from']);
const out = args.out ?? join(here, '../results', quick ? 'quick3d' : '3d');
const backend = await initExampleBackend(args.backend);
const { model: net, metadata } = await loadMasrNet(args.weights ?? { ndim: 3 });
if (net.ndim !== 3) throw new Error(`run3d: the MASR-Net of ${args.weights} is ${net.ndim}D`);
const randomDns = createMasrNet({ ...net.options, seed: 7 });
const randomCnn = createMasrNet({ ...net.options, withoutDns: true, seed: 7 });
const load = () => os.loadavg()[0].toFixed(1);
console.log(
  `backend ${backend}; ${quick ? 'quick' : 'full'}: ${S.size.join('×')}, ${S.test} test + ${S.validation} validation deformation(s) per task, |u| ≤ ${S.pair.maxDisplacement} voxels (B-spline spacing ${S.pair.controlSpacing}); load ${load()}`,
);
console.log(`3D MASR-Net: ${metadata.description ?? '(no description)'}`);

/** The shared deformable set-up of every IO arm (as examples/dns 2D). */
const COMMON = {
  affine: false,
  transform: 'displacement',
  fieldDownsample: 1,
  levels: 3,
  iterations: [100, 80, 50],
  returnVelocity: false,
};
const paperLambda = DNS_PAPER_SCHEDULE.regularisationWeight;
const dnsArm = (features, sigma) => (size, m) => ({
  ...dnsRegistrationOptions(size, features, { sigma }),
  regularisationWeight: paperLambda.map((l) => l * m),
});
/** IO arms: options(size, λ scale) for registerImages; `lambda` names the scaled default. */
const METHODS = {
  dns: {
    label: 'IO-DNS (trained MASR-Net + DNS, ψ_σ σ = 1)',
    lambda: 'λ = s · [0.6, 0.5, 0.4]',
    options: dnsArm(net, 1),
  },
  'dns-nosmooth': {
    label: 'ablation: trained MASR-Net + DNS, no ψ_σ',
    lambda: 'λ = s · [0.6, 0.5, 0.4]',
    options: dnsArm(net, 0),
  },
  'dns-random': {
    label: 'ablation: random-init MASR-Net + DNS, no ψ_σ',
    lambda: 'λ = s · [0.6, 0.5, 0.4]',
    options: dnsArm(randomDns, 0),
  },
  'cnn-random': {
    label: 'ablation: random-init CNN (no DNS), no ψ_σ',
    lambda: 'λ = s · [0.6, 0.5, 0.4]',
    options: dnsArm(randomCnn, 0),
  },
  mind: {
    label: 'IO-MIND (MIND-SSC, MSE)',
    lambda: 'λ = s · 1',
    options: (_size, m) => ({ similarity: 'mind', regularisationWeight: m }),
  },
  mi: {
    label: 'IO-MI (Parzen MI, 16 bins)',
    lambda: 'λ = s · 2',
    options: (_size, m) => ({ similarity: 'mi', regularisationWeight: 2 * m }),
  },
  elastix: {
    label: 'elastix 5 (affine + B-spline, Mattes MI)',
    lambda: 'parameter files as they are',
  },
};
const TASKS = {
  t2: { load: () => bratsVolumeDataset('t2w', S.size), structures: BRATS_STRUCTURES },
  flair: { load: () => bratsVolumeDataset('t2f_flair', S.size), structures: BRATS_STRUCTURES },
  ct: { load: () => ctLikeDataset(S.size), structures: ASEG_STRUCTURES },
};
const methods = args.methods.split(',').filter(Boolean);
for (const m of methods) {
  if (!METHODS[m]) throw new Error(`unknown method '${m}' (${Object.keys(METHODS).join(', ')})`);
}
const haveElastix = ['elastix', 'transformix'].every(
  (b) => spawnSync(b, ['--help'], { stdio: 'ignore' }).status !== null,
);
if (methods.includes('elastix') && !haveElastix) {
  console.log('elastix/transformix not on PATH (Debian: apt-get install elastix): row skipped');
}

/** Binary Dice of `labels ∈ set`; NaN when both are empty. */
function groupDice(a, b, set) {
  let na = 0;
  let nb = 0;
  let both = 0;
  for (let i = 0; i < a.length; i++) {
    const x = set.includes(a[i]);
    const y = set.includes(b[i]);
    na += x;
    nb += y;
    both += x && y;
  }
  return na + nb > 0 ? (2 * both) / (na + nb) : Number.NaN;
}

/** The metrics of one registered pair: warped labels/image and the field's folding. */
async function metricsOf(pair, warpedLabels, warpedImage, folding, seconds, structures) {
  const [a, b] = await Promise.all([warpedLabels.data(), pair.fixedLabels.data()]);
  const hd = (await hausdorff95(warpedLabels, pair.fixedLabels)).filter(Number.isFinite);
  const row = {
    dice: await meanDice(warpedLabels, pair.fixedLabels),
    hd95: hd.reduce((p, q) => p + q, 0) / hd.length,
    ncc: await ncc(warpedImage, pair.movingTruth),
    folding,
    seconds,
  };
  for (const [name, set] of Object.entries(structures)) row[name] = groupDice(a, b, set);
  return row;
}

/** Registers `pair` with an IO arm at λ scale m; its metrics. */
async function runIo(method, m, pair, size, structures) {
  const t0 = performance.now();
  const result = await registerImages(pair.fixed, pair.moving, {
    ...COMMON,
    ...METHODS[method].options(size, m),
  });
  await result.forward.data();
  const seconds = (performance.now() - t0) / 1000;
  const warpedImage = warp(pair.moving, result.forward);
  const warpedLabels = warp(pair.movingLabels, result.forward, { interpolation: 'nearest' });
  const row = await metricsOf(
    pair,
    warpedLabels,
    warpedImage,
    await foldingPercent(result.forward),
    seconds,
    structures,
  );
  tf.dispose([warpedImage, warpedLabels]);
  tf.dispose(Object.values(result).filter((t) => t instanceof tf.Tensor));
  return row;
}

const IDENTITY_AFFINE = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1];
const ELASTIX = join(here, '../../../packages/cli/bench/elastix');

/** elastix's TransformParameters with nearest-neighbour resampling (B-spline order 0). */
function nearestNeighbourCopy(tpFile, outFile) {
  let text = readFileSync(tpFile, 'utf8');
  for (const [key, val] of [
    ['FinalBSplineInterpolationOrder', '0'],
    ['ResultImagePixelType', '"short"'],
    ['ResultImageFormat', '"nii.gz"'],
  ]) {
    const re = new RegExp(`^\\s*\\(${key}\\s[^)]*\\)\\s*$`, 'm');
    text = re.test(text)
      ? text.replace(re, `(${key} ${val})`)
      : `${text.trimEnd()}\n(${key} ${val})\n`;
  }
  writeFileSync(outFile, text);
}

function run(bin, argv) {
  const r = spawnSync(bin, argv, { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) {
    throw new Error(
      `${bin} ${argv.join(' ')} failed (${r.status}): ${(r.stdout ?? '').slice(-2000)}`,
    );
  }
}

/** elastix (affine + B-spline, Mattes MI) on `pair`, labels and image by transformix. */
async function runElastix(pair, structures) {
  const dir = mkdtempSync(join(os.tmpdir(), 'regkit-dns-elastix-'));
  try {
    const vol = (name, data) =>
      writeVolume(join(dir, name), { data, affine: IDENTITY_AFFINE }, { datatype: 'float32' });
    await vol('fixed.nii.gz', pair.fixed);
    await vol('moving.nii.gz', pair.moving);
    await writeVolume(
      join(dir, 'labels.nii.gz'),
      { data: pair.movingLabels, affine: IDENTITY_AFFINE },
      { datatype: 'int16' },
    );
    const threads = args['elastix-threads'];
    for (const d of ['e', 'ti', 'tl']) mkdirSync(join(dir, d));
    const t0 = performance.now();
    run('elastix', [
      '-f',
      join(dir, 'fixed.nii.gz'),
      '-m',
      join(dir, 'moving.nii.gz'),
      '-p',
      join(ELASTIX, 'affine_mattes.txt'),
      '-p',
      join(ELASTIX, 'bspline_mattes.txt'),
      '-out',
      join(dir, 'e'),
      '-threads',
      threads,
    ]);
    const seconds = (performance.now() - t0) / 1000;
    const tp = join(dir, 'e', 'TransformParameters.1.txt');
    run('transformix', [
      '-in',
      join(dir, 'moving.nii.gz'),
      '-tp',
      tp,
      '-jac',
      'all',
      '-out',
      join(dir, 'ti'),
      '-threads',
      threads,
    ]);
    nearestNeighbourCopy(tp, join(dir, 'tp_nn.txt'));
    run('transformix', [
      '-in',
      join(dir, 'labels.nii.gz'),
      '-tp',
      join(dir, 'tp_nn.txt'),
      '-out',
      join(dir, 'tl'),
      '-threads',
      threads,
    ]);
    const read = async (sub, prefix) => {
      const f = readdirSync(join(dir, sub)).find((n) => n.startsWith(prefix));
      if (!f) throw new Error(`transformix wrote no ${prefix}* in ${sub}`);
      return (await readNifti(join(dir, sub, f))).data;
    };
    const warpedImage = await read('ti', 'result.');
    const jac = await read('ti', 'spatialJacobian');
    const warpedLabels = await read('tl', 'result.');
    const j = await jac.data();
    let folded = 0;
    for (const v of j) folded += v <= 0;
    const row = await metricsOf(
      pair,
      warpedLabels,
      warpedImage,
      (100 * folded) / j.length,
      seconds,
      structures,
    );
    tf.dispose([warpedImage, jac, warpedLabels]);
    return row;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Rows of `method` (λ scale m) on `n` deformations with seeds seedBase + from + r. */
async function evaluate(ds, method, m, n, seedBase, structures, from = 0) {
  const rows = [];
  for (let r = from; r < from + n; r++) {
    const pair = makePair(ds, 0, seedBase + r, S.pair);
    if (method === 'identity') {
      rows.push(await metricsOf(pair, pair.movingLabels, pair.moving, 0, 0, structures));
    } else if (method === 'elastix') {
      rows.push(await runElastix(pair, structures));
    } else {
      rows.push(await runIo(method, m, pair, ds.size, structures));
    }
    rows.at(-1).seed = seedBase + r;
    disposePair(pair);
  }
  return rows;
}

const TEST = 100_000;
/** The settings that must agree for runs to be tabled together (not the number of pairs). */
const comparable = ({ size, validation, grid, pair }) =>
  JSON.stringify({ size, validation, grid, pair });
/** Earlier runs' results (--reuse, --lambda-from), checked against this run's settings. */
const earlier = (list, flag) =>
  (list ?? '')
    .split(',')
    .filter(Boolean)
    .map((file) => {
      const r = JSON.parse(readFileSync(file, 'utf8'));
      if (comparable(r.settings) !== comparable(S)) {
        throw new Error(`--${flag} ${file}: its settings differ from this run's (--quick or not?)`);
      }
      return r;
    });
/**
 * Arms of earlier runs (--reuse) by task; rows of the same arm from several runs (other test
 * deformations, --test-from) are joined and ordered by their seed (rows of runs that did not
 * store it were the deformations 0, 1, … in order).
 */
const reused = new Map();
for (const r of earlier(args.reuse, 'reuse')) {
  for (const t of r.results) {
    const arms = reused.get(t.task) ?? [];
    for (const a of t.arms.filter((x) => x.method !== 'identity')) {
      const rows = a.rows.map((row, i) => ({ ...row, seed: row.seed ?? TEST + i }));
      const same = arms.find((b) => b.method === a.method);
      if (same) same.rows.push(...rows.filter((x) => !same.rows.some((y) => y.seed === x.seed)));
      else arms.push({ ...a, rows });
    }
    reused.set(t.task, arms);
  }
}
for (const arms of reused.values()) for (const a of arms) a.rows.sort((x, y) => x.seed - y.seed);
/** λ choices of earlier runs (--lambda-from): task → method → { grid, chosen }. */
const lambdaFrom = new Map();
for (const r of earlier(args['lambda-from'], 'lambda-from')) {
  for (const t of r.results) {
    for (const a of t.arms) {
      if (a.chosen !== null) lambdaFrom.set(`${t.task}/${a.method}`, a);
    }
  }
}

const VALIDATION = 200_000;
const meanOf = (rows, k) => meanAndSe(rows.map((r) => r[k])).mean;
const results = [];
const tables = [];
const ABLATION = new Set(['dns-nosmooth', 'dns-random', 'cnn-random']);
const ablationTasks = new Set(args['ablation-tasks'].split(','));
for (const key of (args.tasks ?? (quick ? 't2' : 't2,flair,ct')).split(',').filter(Boolean)) {
  const task = TASKS[key];
  if (!task) throw new Error(`unknown task '${key}' (${Object.keys(TASKS).join(', ')})`);
  const ds = await task.load();
  if (!ds) {
    console.log(`${key}: data absent (read-only folder), skipped`);
    continue;
  }
  const tTask = performance.now();
  console.log(`\n${ds.name} (${ds.size.join('×')}, ${S.test} test deformations)`);
  const arms = [
    {
      method: 'identity',
      label: 'before (identity)',
      grid: [],
      chosen: null,
      rows: await evaluate(ds, 'identity', 1, S.test, TEST, task.structures, testFrom),
    },
  ];
  for (const method of methods) {
    if (method === 'elastix' && !haveElastix) continue;
    if (ABLATION.has(method) && !ablationTasks.has(key)) continue;
    const spec = METHODS[method];
    const grid = [];
    let chosen = null;
    const given = lambdaFrom.get(`${key}/${method}`);
    if (given) {
      grid.push(...given.grid);
      chosen = given.chosen;
      console.log(`  ${method}: ${spec.lambda}, s = ${chosen} (chosen by the --lambda-from run)`);
    } else if (method !== 'elastix' && S.grid.length === 1) {
      chosen = S.grid[0];
      console.log(`  ${method}: ${spec.lambda}, s = ${chosen} (no grid in --quick)`);
    } else if (method !== 'elastix') {
      for (const m of S.grid) {
        const rows = await evaluate(ds, method, m, S.validation, VALIDATION, task.structures);
        grid.push({ value: m, validationDice: meanOf(rows, 'dice') });
        console.log(
          `  ${method} s = ${m}: validation Dice ${(100 * meanOf(rows, 'dice')).toFixed(1)}, folding ${meanOf(rows, 'folding').toFixed(3)} %, ${meanOf(rows, 'seconds').toFixed(1)} s (load ${load()})`,
        );
      }
      chosen = grid.reduce((a, b) => (b.validationDice > a.validationDice ? b : a)).value;
      console.log(`  ${method}: grid ${spec.lambda}, s ∈ {${S.grid.join(', ')}} → s = ${chosen}`);
    }
    const rows = await evaluate(ds, method, chosen, S.test, TEST, task.structures, testFrom);
    arms.push({ method, label: spec.label, lambda: spec.lambda, grid, chosen, rows });
    console.log(
      `  ${spec.label}: test Dice ${(100 * meanOf(rows, 'dice')).toFixed(1)}, HD95 ${meanOf(rows, 'hd95').toFixed(2)}, folding ${meanOf(rows, 'folding').toFixed(3)} %, ${meanOf(rows, 'seconds').toFixed(1)} s (load ${load()})`,
    );
  }
  for (const a of reused.get(key) ?? []) {
    const same = arms.find((b) => b.method === a.method);
    if (!same) arms.push(a);
    else {
      same.rows.push(...a.rows.filter((x) => !same.rows.some((y) => y.seed === x.seed)));
      same.rows.sort((x, y) => x.seed - y.seed);
    }
  }
  for (const a of arms) {
    if (a.rows.length !== arms[0].rows.length) {
      console.log(
        `  note: ${a.method} has ${a.rows.length} test rows, the identity ${arms[0].rows.length}`,
      );
    }
  }
  const order = ['identity', ...Object.keys(METHODS)];
  arms.sort((a, b) => order.indexOf(a.method) - order.indexOf(b.method));
  const minutes = (performance.now() - tTask) / 60000;
  results.push({ task: key, name: ds.name, size: ds.size, minutes, arms });
  tables.push(taskTable(ds, task.structures, arms, minutes));
  for (const t of Object.values(ds.slices.get(0))) t?.dispose();
}

/** Markdown table of a task: mean ± SE over the test deformations, paired Δ vs IO-DNS. */
function taskTable(ds, structures, arms, minutes) {
  const base = arms.find((a) => a.method === 'dns');
  const c = (rows, k, scale, digits) => {
    const s = meanAndSe(rows.map((r) => r[k]));
    return pm(s.mean, s.se, { scale, digits });
  };
  const names = Object.keys(structures);
  const header = [
    'method',
    'λ grid → chosen (validation Dice)',
    'Dice % (all labels)',
    ...names.map((n) => `Dice % ${n}`),
    'HD95 (vox)',
    'NCC vs truth',
    '% |J| ≤ 0',
    'time (s)',
    'Δ Dice % vs IO-DNS (paired)',
  ];
  const lines = arms.map((a) => {
    const d =
      base && a !== base && a.method !== 'identity'
        ? pairedDifference(
            a.rows.map((r) => r.dice),
            base.rows.map((r) => r.dice),
          )
        : null;
    return [
      a.label,
      a.method === 'identity'
        ? '–'
        : a.grid.length
          ? `${a.lambda}: ${a.grid.map((g) => `${g.value} (${(100 * g.validationDice).toFixed(1)})`).join(', ')} → ${a.chosen}`
          : a.lambda,
      c(a.rows, 'dice', 100, 1),
      ...names.map((n) => c(a.rows, n, 100, 1)),
      c(a.rows, 'hd95', 1, 2),
      c(a.rows, 'ncc', 1, 3),
      a.method === 'identity' ? '–' : c(a.rows, 'folding', 1, 3),
      a.method === 'identity' ? '' : c(a.rows, 'seconds', 1, 1),
      d ? pm(d.mean, d.se, { scale: 100, digits: 1 }) : a === base ? '(baseline)' : '',
    ];
  });
  return `### ${ds.name} (${ds.size.join('×')}, ${arms[0].rows.length} test deformations${reused.size ? '' : `; ${minutes.toFixed(1)} min`})\n\n${markdownTable(header, lines)}`;
}

const totalMinutes = (performance.now() - started) / 60000;
const table = `${tables.join('\n\n')}\n\nMean ± standard error over the test deformations; Δ: paired difference of the Dice against IO-DNS on the same deformations (± its standard error). ${reused.size ? `Arms of ${args.reuse.split(',').length} earlier runs (--reuse) tabled with this one` : `Whole run ${totalMinutes.toFixed(1)} min`}, backend ${backend}, load average at the end ${load()}.`;
console.log(`\n${table}`);
mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'table.md'), `${table}\n`);
writeFileSync(
  join(out, 'results.json'),
  `${JSON.stringify({ backend, quick, settings: S, weights: metadata.description, totalMinutes, results }, null, 1)}\n`,
);
console.log(`wrote ${join(out, 'table.md')} and results.json (${totalMinutes.toFixed(1)} min)`);
net.dispose();
randomDns.dispose();
randomCnn.dispose();
