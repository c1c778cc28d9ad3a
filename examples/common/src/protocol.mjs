/**
 * The evaluation protocol shared by the paper examples (issue 21), so that their tables can
 * show a method's effect rather than run-to-run noise:
 * - data: BraTS axial slices (T1 → FLAIR or T2) split into training, validation (z ≡ 0 mod 20)
 *   and test slices (z ≡ 5 mod 10), the three disjoint; training slices ≥ 3 slices from every
 *   test slice and ≥ 2 from every validation slice;
 * - pairs: moving and fixed slice each deformed by its own random cubic B-spline field with
 *   |u_k| ≤ 8 voxels (control spacing 24 voxels: below 0.4 × spacing, fold-free), so the
 *   starting Dice is low; test: every test slice × `deformations` seeds;
 * - arms: each method's weight is chosen from a small grid on the validation pairs (mean Dice),
 *   with the first seed; the grid and the choice are printed; then the other seeds train at
 *   the chosen value; every arm has the same optimiser and budget unless its example says so;
 * - report: per test pair Dice over all labels, over the tumour (labels 1–3 merged) and over
 *   the brain mask (every label), global NCC of the warped moving image against the moving
 *   image deformed like the fixed one, % of |J| ≤ 0; per arm mean ± standard error over
 *   seeds (and over pairs), and paired differences against the baseline arm (same seeds, same
 *   pairs) with their standard errors (`stats.mjs`).
 */
import { tf, warp } from '@regkit/core';
import { foldingPercent, meanDice, ncc } from '@regkit/metrics';
import { bratsDataset, disposePair, makePair, trainingPair } from './slices.mjs';
import { pairedRuns, pm, summariseRuns } from './stats.mjs';

/** Deformations of every protocol pair: |u_k| ≤ 8 voxels on a 24-voxel B-spline grid. */
export const PAIR_OPTIONS = Object.freeze({ maxDisplacement: 8, controlSpacing: 24 });

/** Training / validation / test slices of the protocol (see the module comment). */
export function protocolSplit(zs) {
  const test = zs.filter((z) => z % 10 === 5);
  const validation = zs.filter((z) => z % 20 === 0);
  const train = zs.filter(
    (z) => test.every((t) => Math.abs(z - t) >= 3) && validation.every((v) => Math.abs(z - v) >= 2),
  );
  return { train, validation, test };
}

/**
 * The protocol's settings: `quick` (a check that runs in minutes) or full; `size` (pixels per
 * side), `deformations` (per test slice) and `seeds` ('1,2,3') override the mode's values (a
 * labelled subset, or one part of a run split over processes by seed).
 * @param {{ quick?: boolean, size?: string | number, deformations?: string | number, seeds?: string }} o
 */
export function protocolSettings({ quick = false, size, deformations, seeds } = {}) {
  const base = quick
    ? { quick, seeds: [1, 2, 3], size: [64, 64], deformations: 5, validationDeformations: 2 }
    : { quick, seeds: [1, 2, 3], size: [96, 96], deformations: 10, validationDeformations: 4 };
  if (size !== undefined) {
    const n = Number(size);
    if (!(Number.isInteger(n) && n >= 32 && n % 16 === 0)) {
      throw new Error(`--size must be a multiple of 16 ≥ 32 (pixels per side), got '${size}'`);
    }
    base.size = [n, n];
  }
  if (deformations !== undefined) {
    const n = Number(deformations);
    if (!(Number.isInteger(n) && n >= 1)) {
      throw new Error(`--deformations must be a positive integer, got '${deformations}'`);
    }
    base.deformations = n;
  }
  if (seeds !== undefined) {
    const list = String(seeds).split(',').map(Number);
    if (!list.length || list.some((n) => !(Number.isInteger(n) && n >= 1))) {
      throw new Error(`--seeds must be a comma list of positive integers, got '${seeds}'`);
    }
    base.seeds = list;
  }
  return base;
}

/**
 * A weight grid from a `--grid` flag ('0.1,1,10': finite positive numbers), or `fallback`.
 * @param {string | undefined} text
 * @param {number[]} fallback
 */
export function parseGrid(text, fallback) {
  if (text === undefined) return fallback;
  const values = text.split(',').map(Number);
  if (!values.length || values.some((v) => !(Number.isFinite(v) && v > 0))) {
    throw new Error(`--grid must be a comma list of positive numbers, got '${text}'`);
  }
  return values;
}

/** BraTS T1 → `target` with the protocol's split at `size`, or null when the data are absent. */
export function bratsProtocolDataset(target, size) {
  return bratsDataset(target, { size, split: protocolSplit });
}

/**
 * The training pair of `step` for a run with `seed`: a training slice, deformations seeded
 * from seed·10⁶ + step (disjoint from the validation and test seeds).
 */
export function protocolTrainingPair(dataset, seed, step) {
  return trainingPair(dataset, seed * 1_000_000 + step, PAIR_OPTIONS);
}

/** Binary Dice of `labels ∈ set` in two label arrays; NaN when both masks are empty. */
function groupDice(a, b, inGroup) {
  let na = 0;
  let nb = 0;
  let both = 0;
  for (let i = 0; i < a.length; i++) {
    const x = inGroup(a[i]);
    const y = inGroup(b[i]);
    na += x;
    nb += y;
    both += x && y;
  }
  return na + nb > 0 ? (2 * both) / (na + nb) : Number.NaN;
}

/**
 * The two label groups of a BraTS pair (the protocol's default): the tumour (labels 1–3
 * merged) and the brain mask (every label). A dataset may bring its own two as `groups`.
 */
export const BRATS_GROUPS = Object.freeze([
  { key: 'tumour', label: 'tumour', test: (v) => v >= 1 && v <= 3 },
  { key: 'brain', label: 'brain', test: (v) => v > 0 },
]);

/**
 * Two FreeSurfer aseg groups (the VoxelMorph T1): the cerebral cortex (labels 3, 42) and the
 * deep grey matter (thalamus, caudate, putamen, pallidum, hippocampus, amygdala: 10–13,
 * 17, 18, 49–54), each merged into one mask. Stored under the keys `tumour` and `brain` of
 * the rows, so that one table layout serves both (the column headers name the groups).
 */
export const ASEG_GROUPS = Object.freeze([
  { key: 'tumour', label: 'cortex', test: (v) => v === 3 || v === 42 },
  {
    key: 'brain',
    label: 'deep grey matter',
    test: (v) => [10, 11, 12, 13, 17, 18, 49, 50, 51, 52, 53, 54].includes(v),
  },
]);

/**
 * Per-pair metrics of `register(moving, fixed) → { forward, … }` (null: the identity) on the
 * `slices` of `dataset`, `deformations` pairs each (pair seeds seedBase + 10·z + r): rows of
 * { z, r, dice, tumour, brain, ncc, folding } (Dice as fractions, folding in %); `tumour` and
 * `brain` are the Dice of the dataset's two label groups (`dataset.groups`, default
 * {@link BRATS_GROUPS}).
 */
export async function evaluatePairs(dataset, register, { slices, deformations, seedBase }) {
  const groups = dataset.groups ?? BRATS_GROUPS;
  const rows = [];
  for (const z of slices) {
    for (let r = 0; r < deformations; r++) {
      const pair = makePair(dataset, z, seedBase + 10 * z + r, PAIR_OPTIONS);
      const out = register ? await register(pair.moving, pair.fixed) : null;
      const field = out?.forward ?? tf.zeros([1, ...dataset.size, dataset.size.length]);
      const warped = warp(pair.moving, field);
      const wl = warp(pair.movingLabels, field, { interpolation: 'nearest' });
      const [a, b] = await Promise.all([wl.data(), pair.fixedLabels.data()]);
      rows.push({
        z,
        r,
        dice: await meanDice(wl, pair.fixedLabels),
        tumour: groupDice(a, b, groups[0].test),
        brain: groupDice(a, b, groups[1].test),
        ncc: await ncc(warped, pair.movingTruth),
        folding: await foldingPercent(field),
      });
      tf.dispose([warped, wl, field]);
      if (out) tf.dispose(Object.values(out).filter((t) => t instanceof tf.Tensor));
      disposePair(pair);
    }
  }
  return rows;
}

const TEST_SEEDS = 100_000;
const VALIDATION_SEEDS = 200_000;

/** The test rows of the identity (no registration). */
export function evaluateIdentity(dataset, settings) {
  return evaluatePairs(dataset, null, {
    slices: dataset.test,
    deformations: settings.deformations,
    seedBase: TEST_SEEDS,
  });
}

const meanOf = (rows, key) => {
  const v = rows.map((r) => r[key]).filter(Number.isFinite);
  return v.reduce((p, q) => p + q, 0) / v.length;
};

/**
 * One arm of a protocol table. For every value of `grid`, trains with the first seed
 * (`train({ value, seed })` → { register, dispose }) and scores the mean Dice on the
 * validation pairs; prints the grid and the choice; trains the other seeds at the chosen
 * value; evaluates every chosen run on the test pairs.
 *
 * @returns {Promise<{ name, label, gridName, grid: Array<{ value, validationDice, validationFolding }>,
 *   chosen, runs: Array<{ seed, trainSeconds, rows }> }>}
 */
export async function runArm({ name, label, gridName, grid, train, dataset, settings }) {
  const [first, ...others] = settings.seeds;
  const trained = async (value, seed) => {
    const t0 = performance.now();
    const model = await train({ value, seed });
    return { model, trainSeconds: (performance.now() - t0) / 1000 };
  };
  const test = (register) =>
    evaluatePairs(dataset, register, {
      slices: dataset.test,
      deformations: settings.deformations,
      seedBase: TEST_SEEDS,
    });
  const scored = [];
  let best = null;
  for (const value of grid) {
    const { model, trainSeconds } = await trained(value, first);
    const rows = await evaluatePairs(dataset, model.register, {
      slices: dataset.validation,
      deformations: settings.validationDeformations,
      seedBase: VALIDATION_SEEDS,
    });
    const entry = {
      value,
      validationDice: meanOf(rows, 'dice'),
      validationFolding: meanOf(rows, 'folding'),
    };
    scored.push(entry);
    console.log(
      `  ${name} ${gridName} = ${value} (seed ${first}): validation Dice ${(100 * entry.validationDice).toFixed(1)}, folding ${entry.validationFolding.toFixed(3)} %, trained ${trainSeconds.toFixed(0)} s`,
    );
    if (!best || entry.validationDice > best.entry.validationDice) {
      best?.model.dispose();
      best = { entry, model, trainSeconds };
    } else {
      model.dispose();
    }
  }
  const chosen = best.entry.value;
  console.log(
    `  ${name}: grid ${gridName} ∈ {${grid.join(', ')}} → chosen ${chosen} (validation Dice ${(100 * best.entry.validationDice).toFixed(1)})`,
  );
  const runs = [
    { seed: first, trainSeconds: best.trainSeconds, rows: await test(best.model.register) },
  ];
  best.model.dispose();
  for (const seed of others) {
    const { model, trainSeconds } = await trained(chosen, seed);
    runs.push({ seed, trainSeconds, rows: await test(model.register) });
    model.dispose();
  }
  const s = summariseRuns(runs.map((r) => r.rows.map((x) => x.dice)));
  console.log(
    `  ${name}: test Dice ${pm(s.mean, s.seSeeds, { scale: 100 })} (± SE over ${s.seeds} seeds)`,
  );
  return { name, label, gridName, grid: scored, chosen, runs };
}

/** `[seeds][pairs]` values of `key` in an arm's runs. */
export function valuesOf(arm, key) {
  return arm.runs.map((r) => r.rows.map((x) => x[key]));
}

/**
 * The Markdown table of a protocol's arms: per arm its chosen weight (and grid), Dice (all
 * labels, and the two label groups: `groups`, default tumour and brain), NCC, folding as
 * mean ± SE over seeds, and the paired Dice difference against `baseline` (an arm name) ± SE
 * over seeds and over pairs (on the seeds both have). `identity` (rows of
 * {@link evaluateIdentity}) is the first line.
 */
export function protocolTable(arms, { baseline, identity, groups = BRATS_GROUPS }) {
  const base = arms.find((a) => a.name === baseline);
  const header = [
    'arm',
    'weight: grid → chosen',
    'Dice % (all labels)',
    `Dice % ${groups[0].label}`,
    `Dice % ${groups[1].label}`,
    'NCC',
    '% \\|J\\| ≤ 0',
    `Δ Dice vs ${base?.label ?? baseline} (SE seeds)`,
    'Δ Dice (SE pairs)',
  ];
  const cellOf = (values, scale, digits) => {
    const s = summariseRuns(values);
    return pm(s.mean, s.seSeeds, { scale, digits });
  };
  const lines = [];
  if (identity) {
    const v = (k) => [identity.map((x) => x[k])];
    lines.push([
      'before (identity)',
      '–',
      cellOf(v('dice'), 100, 1),
      cellOf(v('tumour'), 100, 1),
      cellOf(v('brain'), 100, 1),
      cellOf(v('ncc'), 1, 3),
      '–',
      '',
      '',
    ]);
  }
  for (const arm of arms) {
    // pair on the seeds both arms have (a run stopped early may lack some)
    const common = base ? arm.runs.filter((r) => base.runs.some((b) => b.seed === r.seed)) : [];
    const onCommon = (a) =>
      common.map((r) => a.runs.find((x) => x.seed === r.seed).rows.map((x) => x.dice));
    const d =
      base && arm !== base && common.length ? pairedRuns(onCommon(arm), onCommon(base)) : null;
    lines.push([
      arm.label,
      arm.grid.length > 1
        ? `${arm.gridName} ∈ {${arm.grid.map((g) => g.value).join(', ')}} → ${arm.chosen}`
        : `${arm.gridName} = ${arm.chosen} (fixed, not tuned)`,
      cellOf(valuesOf(arm, 'dice'), 100, 1),
      cellOf(valuesOf(arm, 'tumour'), 100, 1),
      cellOf(valuesOf(arm, 'brain'), 100, 1),
      cellOf(valuesOf(arm, 'ncc'), 1, 3),
      cellOf(valuesOf(arm, 'folding'), 1, 3),
      d
        ? pm(d.seeds.mean, d.seeds.se, { scale: 100, digits: 1 })
        : arm === base
          ? '(baseline)'
          : '',
      d ? pm(d.pairs.mean, d.pairs.se, { scale: 100, digits: 1 }) : '',
    ]);
  }
  return [
    `| ${header.join(' | ')} |`,
    `|${header.map(() => '---').join('|')}|`,
    ...lines.map((r) => `| ${r.join(' | ')} |`),
  ].join('\n');
}
