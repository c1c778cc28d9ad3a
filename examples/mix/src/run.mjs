#!/usr/bin/env node
/**
 * examples/mix: cross-paper combinations through regkit's shared contracts, each against its
 * parent method at the same budget, under the shared protocol of
 * examples/common/src/protocol.mjs (BraTS T1 → FLAIR slices, validation grids, seeds,
 * |u| ≤ 8 voxels, mean ± SE, paired differences against the parent):
 * - sitreg: SITReg with its own LNCC₇ (parent) / MINE-local (warm-started) / MIND-SSC;
 * - voxelmorph: VoxelMorph with Parzen MI and local NCC (parents) / DNS features (MASR-Net);
 * - fire: FIRE with its own RMS on synthesised images (parent) / DNS features;
 * - io: registerImages with MI and MIND (parents) / DNS features.
 * Arms: src/combinations.mjs. Each group writes `<out>/<group>.json`; `table.md` is rebuilt
 * from every group file in `<out>` (so groups can run in separate processes).
 *
 *   node src/run.mjs --quick        # a check (< 10 min): 64×64, 2 deformations, one-value grids, few steps
 *   node src/run.mjs                # the full protocol: 96×96, 10 deformations, 3-value grids
 *   node src/run.mjs --groups fire --size 64 --deformations 5 --grids small --fire-steps 75
 *   node src/run.mjs --groups voxelmorph --vxm-steps 200 --size 64 --grids small
 *   node src/run.mjs --table-only --merge dir1 --merge dir2 --out results   # arms run elsewhere
 *   node src/run.mjs --arms vxm-mi --grid 30 --seeds 1 --out ext              # a grid extension
 *   node src/run.mjs --table-only --grid-runs ext --out results               # … joined
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { initExampleBackend } from '@regkit/example-common/backend';
import {
  bratsProtocolDataset,
  evaluateIdentity,
  parseGrid,
  protocolSettings,
  protocolTable,
  protocolTrainingPair,
  runArm,
} from '@regkit/example-common/protocol';
import { pairedRuns, pm } from '@regkit/example-common/stats';
import { epochsForSteps } from '@regkit/example-common/steps';
import { loadMasrNet } from '@regkit/networks';
import { ADAM, ARMS, GROUPS, IO_COMMON, VOXELMORPH_ADAM } from './combinations.mjs';
import { joinGroupGridRuns, mergeGroupRuns } from './merge.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    'table-only': { type: 'boolean', default: false },
    groups: { type: 'string', default: Object.keys(GROUPS).join(',') },
    arms: { type: 'string' },
    merge: { type: 'string', multiple: true, default: [] },
    'grid-runs': { type: 'string', multiple: true, default: [] },
    grid: { type: 'string' },
    seeds: { type: 'string' },
    size: { type: 'string' },
    deformations: { type: 'string' },
    'validation-deformations': { type: 'string' },
    grids: { type: 'string' },
    steps: { type: 'string' },
    'fire-steps': { type: 'string' },
    'vxm-steps': { type: 'string' },
    'warm-start-steps': { type: 'string' },
    'io-iterations': { type: 'string' },
    target: { type: 'string', default: 't2f_flair' },
    out: { type: 'string', default: join(here, '../results') },
    backend: { type: 'string' },
  },
});
const quick = args.quick;
const base = protocolSettings({ quick, seeds: args.seeds });
// `--grid v1,v2`: other weights for the arms of `--arms` (a grid extension, joined to the full
// run with `--grid-runs`)
const gridValues = args.grid === undefined ? null : parseGrid(args.grid, null);
if (gridValues && !args.arms) {
  console.error('--grid needs --arms (the arms whose grid it replaces)');
  process.exit(2);
}
const size = args.size ? [Number(args.size), Number(args.size)] : base.size;
const deformations = Number(args.deformations ?? (quick ? 2 : base.deformations));
const settings = {
  ...base,
  size,
  deformations,
  validationDeformations: Number(
    args['validation-deformations'] ??
      (quick ? 1 : Math.max(1, Math.min(base.validationDeformations, deformations))),
  ),
};
const gridKind = args.grids ?? (quick ? 'check' : 'full');
if (!['check', 'small', 'full'].includes(gridKind)) {
  console.error(`--grids must be check, small or full, got '${args.grids}'`);
  process.exit(2);
}
/** Steps per epoch of the trainer (a grouping only: pair i of a run is the same whatever it is). */
const STEPS_PER_EPOCH = 5;
const stepsArg = args.steps ?? (quick ? 20 : 600);
const fireStepsArg = args['fire-steps'] ?? (quick ? 10 : 300);
/** Epochs of a step budget, or exit 2 with the message naming the flag that gave it. */
const epochsOrExit = (flag, steps) => {
  try {
    return epochsForSteps(steps, STEPS_PER_EPOCH);
  } catch (e) {
    process.stderr.write(`${e.message.replace('--steps', flag)}\n`);
    process.exit(2);
  }
};
const epochs = epochsOrExit('--steps', stepsArg);
const fireEpochs = epochsOrExit('--fire-steps', fireStepsArg);
// VoxelMorph's own step count (default: --steps): it needs ≥ 200 steps to leave the identity
const vxmStepsArg = args['vxm-steps'] ?? stepsArg;
const vxmEpochs = epochsOrExit(args['vxm-steps'] ? '--vxm-steps' : '--steps', vxmStepsArg);
const warmSteps = Number(args['warm-start-steps'] ?? (quick ? 100 : 1000));
const ioIterations = (
  args['io-iterations'] ?? (quick ? '20,15,10' : IO_COMMON.iterations.join(','))
)
  .split(',')
  .map(Number);
if (
  ioIterations.length !== IO_COMMON.levels ||
  !ioIterations.every((n) => Number.isInteger(n) && n >= 0)
) {
  console.error(
    `--io-iterations must be ${IO_COMMON.levels} integers ≥ 0, got '${args['io-iterations']}'`,
  );
  process.exit(2);
}
const groups = args['table-only'] ? [] : args.groups.split(',').filter(Boolean);
for (const g of groups) {
  if (!GROUPS[g]) {
    console.error(`--groups: unknown group '${g}' (${Object.keys(GROUPS).join(', ')})`);
    process.exit(2);
  }
}
const onlyArms = args.arms?.split(',').filter(Boolean);
for (const a of onlyArms ?? []) {
  if (!ARMS[a]) {
    console.error(`--arms: unknown arm '${a}' (${Object.keys(ARMS).join(', ')})`);
    process.exit(2);
  }
}

const backend = await initExampleBackend(args.backend);
const t0 = performance.now();
console.log(
  `backend ${backend}; ${quick ? 'QUICK check' : 'protocol'}: ${size.join('×')}, seeds ${settings.seeds.join(', ')} (instance optimisation: seed 1, deterministic), ${deformations} deformations per test slice, grids '${gridKind}', ${Number(stepsArg)} steps (VoxelMorph ${Number(vxmStepsArg)}, FIRE ${Number(fireStepsArg)}), MINE warm start ${warmSteps} steps, IO iterations ${ioIterations.join('/')}`,
);
// (`--table-only`: no group runs, so nothing is loaded)
const dataset = groups.length ? await bratsProtocolDataset(args.target, size) : null;
if (groups.length && !dataset) {
  console.log(
    'examples/mix: skipped, the read-only BraTS case was not found (set REGKIT_BRATS_DIR)',
  );
  process.exit(0);
}
if (dataset) {
  console.log(
    `${dataset.name}: ${dataset.train.length} training, ${dataset.validation.length} validation, ${dataset.test.length} test slices`,
  );
}
const { model: masr, metadata: masrMetadata } = groups.length
  ? await loadMasrNet()
  : { model: null, metadata: null };
const identity = dataset ? await evaluateIdentity(dataset, settings) : null;

mkdirSync(args.out, { recursive: true });
/** Writes to a temporary file and renames it, so a reader never sees half a file. */
const write = (file, text) => {
  writeFileSync(`${file}.tmp`, text);
  renameSync(`${file}.tmp`, file);
};

for (const group of groups) {
  const g0 = performance.now();
  const names = Object.keys(ARMS).filter(
    (n) => ARMS[n].group === group && (!onlyArms || onlyArms.includes(n)),
  );
  if (!names.length) continue;
  const isIo = group === 'io';
  const isFire = group === 'fire';
  const isVxm = group === 'voxelmorph';
  const groupSettings = isIo ? { ...settings, seeds: [1] } : settings;
  const groupSteps = isIo ? 0 : Number(isFire ? fireStepsArg : isVxm ? vxmStepsArg : stepsArg);
  const groupEpochs = isFire ? fireEpochs : isVxm ? vxmEpochs : epochs;
  const warmLog = [];
  console.log(`\n## ${GROUPS[group].title}`);
  const arms = [];
  for (const name of names) {
    const spec = ARMS[name];
    console.log(`${name}: ${spec.label}`);
    const train = async ({ value, seed }) =>
      spec.build({
        value,
        seed,
        data: (epoch, step) => protocolTrainingPair(dataset, seed, epoch * STEPS_PER_EPOCH + step),
        epochs: groupEpochs,
        stepsPerEpoch: STEPS_PER_EPOCH,
        masr,
        warmSteps,
        warmData: (i) => protocolTrainingPair(dataset, 50 + seed, i),
        log: (w) => {
          warmLog.push({ arm: name, value, ...w });
          console.log(
            `    MINE warm start (seed ${w.seed}): estimate on unregistered pairs ${w.before.toFixed(3)} → ${w.after.toFixed(3)} nats`,
          );
        },
        size,
        iterations: ioIterations,
      });
    arms.push(
      await runArm({
        name,
        label: spec.label,
        gridName: spec.gridName,
        grid: gridValues ?? spec.grid[gridKind],
        train,
        dataset,
        settings: groupSettings,
      }),
    );
  }
  const minutes = (performance.now() - g0) / 60_000;
  const file = join(args.out, `${group}.json`);
  let result = {
    group,
    title: GROUPS[group].title,
    baseline: GROUPS[group].baseline,
    dataset: dataset.name,
    backend,
    quick,
    settings: groupSettings,
    gridKind: gridValues ? 'custom' : gridKind,
    steps: groupSteps,
    learningRate: isIo || isFire ? undefined : (isVxm ? VOXELMORPH_ADAM : ADAM).learningRate,
    stepsPerEpoch: STEPS_PER_EPOCH,
    warmSteps: group === 'sitreg' ? warmSteps : undefined,
    ioIterations: isIo ? ioIterations : undefined,
    masr: masrMetadata.description,
    minutes,
    date: new Date().toISOString(),
    warmStart: warmLog,
    identity,
    arms,
  };
  // `--arms` adds its arms to the group's file (same settings only), so arms can run one
  // after another into one folder; an arm run again replaces its earlier result
  if (onlyArms && existsSync(file)) {
    result = mergeGroupRuns(JSON.parse(readFileSync(file, 'utf8')), result, file);
  }
  write(file, `${JSON.stringify(result, null, 1)}\n`);
  console.log(`  ${group}: ${minutes.toFixed(1)} min`);
}
masr?.dispose();

// `--merge dir…`: group files of runs in other folders (arms split over processes) join
// `--out`'s, with the checks of mergeGroupRuns
for (const dir of args.merge) {
  for (const g of Object.keys(GROUPS)) {
    const from = join(dir, `${g}.json`);
    if (!existsSync(from)) continue;
    const file = join(args.out, `${g}.json`);
    const b = JSON.parse(readFileSync(from, 'utf8'));
    const merged = existsSync(file)
      ? mergeGroupRuns(JSON.parse(readFileSync(file, 'utf8')), b, `${file} (merging ${from})`)
      : b;
    write(file, `${JSON.stringify(merged, null, 1)}\n`);
  }
}

/** The Markdown of one group file: heading with its settings, the protocol table, train times. */
export function groupMarkdown(r) {
  const budget =
    r.group === 'io'
      ? `registerImages ${r.ioIterations.join('/')} iterations per level, seed 1 (deterministic: SE over pairs only)`
      : `${r.steps} steps${r.learningRate ? ` at Adam lr ${r.learningRate}` : ''}, ${r.settings.seeds.length} seeds${r.group === 'sitreg' ? `, MINE warm start ${r.warmSteps} steps` : ''}`;
  const times =
    r.group === 'io'
      ? ''
      : ` Training time per run (mean over seeds): ${r.arms
          .map((a) => {
            const s = a.runs.map((x) => x.trainSeconds);
            return `${a.label} ${(s.reduce((p, q) => p + q, 0) / s.length).toFixed(0)} s`;
          })
          .join('; ')}.`;
  // every mix against every other parent of its group (the table's Δ is against the first)
  const diceOf = (a) => a.runs.map((x) => x.rows.map((y) => y.dice));
  const others = [];
  for (const mix of r.arms.filter((a) => !ARMS[a.name]?.parent)) {
    for (const parent of r.arms.filter((a) => ARMS[a.name]?.parent && a.name !== r.baseline)) {
      const d = pairedRuns(diceOf(mix), diceOf(parent));
      others.push(
        `${mix.label} − ${parent.label}: ${pm(d.seeds.mean, d.seeds.se, { scale: 100 })} (SE seeds), ${pm(d.pairs.mean, d.pairs.se, { scale: 100 })} (SE pairs)`,
      );
    }
  }
  const otherLine = others.length
    ? `Δ Dice against the other parent: ${others.join('; ')}.\n\n`
    : '';
  return `### ${r.title}: ${r.dataset} (${r.settings.size.join('×')}, ${r.settings.deformations} deformations per test slice, ${budget}; ${r.quick ? '--quick check' : `grids '${r.gridKind}'`})\n\n${protocolTable(r.arms, { baseline: r.baseline, identity: r.identity })}\n\n${otherLine}${times.trim()}${times ? ' ' : ''}Group wall time ${r.minutes.toFixed(1)} min on ${r.backend}, ${r.date.slice(0, 16)} UTC.\n`;
}

// `--grid-runs dir…`: grid extensions of some arms (see joinGroupGridRuns) join `--out`'s groups
for (const dir of args['grid-runs']) {
  for (const g of Object.keys(GROUPS)) {
    const from = join(dir, `${g}.json`);
    const file = join(args.out, `${g}.json`);
    if (!existsSync(from)) continue;
    if (!existsSync(file)) throw new Error(`--grid-runs ${from}: no ${file} to join it to`);
    const joined = joinGroupGridRuns(
      JSON.parse(readFileSync(file, 'utf8')),
      JSON.parse(readFileSync(from, 'utf8')),
      `${file} (joining ${from})`,
    );
    write(file, `${JSON.stringify(joined, null, 1)}\n`);
  }
}

const files = Object.keys(GROUPS)
  .map((g) => join(args.out, `${g}.json`))
  .filter(existsSync);
const table = `${files.map((f) => groupMarkdown(JSON.parse(readFileSync(f, 'utf8')))).join('\n')}\nMean ± standard error over seeds; Δ: paired Dice difference against the group's first parent (same seeds and test pairs), ± SE over seeds and over pairs.\n`;
write(join(args.out, 'table.md'), table);
console.log(`\n${table}`);
console.log(
  `this run: ${((performance.now() - t0) / 60_000).toFixed(1)} min; results: ${args.out}/{${groups.join(',')}}.json, table.md`,
);
