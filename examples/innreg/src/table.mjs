#!/usr/bin/env node
/**
 * The INNReg tables from protocol runs split over several processes:
 *
 *   node src/table.mjs <dir> [<dir> …] [--grid-runs <dir> …] [--out results]
 *
 * Each <dir> holds the `results.json` of `src/run.mjs --out <dir> --arms …` with the same
 * settings (checked, as is the determinism of an arm present twice: `mergeRuns`; and the
 * optimiser, `--optimiser common|paper` of run.mjs, a stamp without one being `common`). Writes
 * `results.json` (every arm's per-pair values and every run's stamp) and `table.md` to --out.
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { adoptPriorGrids, joinGridRuns, mergeRuns } from '@regkit/example-common/merge';
import { protocolTable, valuesOf } from '@regkit/example-common/protocol';

const here = dirname(fileURLToPath(import.meta.url));
const { values: args, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    out: { type: 'string', default: join(here, '../results') },
    prior: { type: 'string', multiple: true, default: [] },
    'grid-runs': { type: 'string', multiple: true, default: [] },
  },
});
const { stamps, identity, arms } = mergeRuns(positionals);
const s = stamps[0];
/** The optimiser of a run (`common` for runs stamped before `--optimiser` existed). */
const optimiserOf = (stamp) => ({
  name: stamp.optimiser ?? 'common',
  beta2: stamp.beta2 ?? 0.999,
  schedule: stamp.learningRateSchedule ?? 'constant',
});
for (const x of stamps) {
  if (JSON.stringify(optimiserOf(x)) !== JSON.stringify(optimiserOf(s))) {
    throw new Error(
      `table.mjs: ${x.dir} ran with the ${optimiserOf(x).name} optimiser, ${s.dir} with the ${optimiserOf(s).name} one: tables never mix optimisers`,
    );
  }
}
const opt = optimiserOf(s);
const optimiserText =
  opt.name === 'paper'
    ? `Adam lr ${s.learningRate}, β1 ${s.beta1}, β2 ${opt.beta2}, ${opt.schedule} to 0 (paper optimiser)`
    : `Adam lr ${s.learningRate}, β1 ${s.beta1} (common optimiser)`;
// `--grid-runs dir`: an arm's other grid values (seed 1) run in other processes
joinGridRuns(arms, identity, args['grid-runs']);
const priorNote = adoptPriorGrids(arms, args.prior);
const TABLE_A = [
  'r-one-minus-mi',
  'r-code-barrier',
  'r-one-minus-mi-effective',
  'r-code-barrier-binding',
  'r-paper-barrier-reachable',
];
const TABLE_B = [
  'vm-mi',
  'r-code-barrier',
  'innreg',
  'innreg-official',
  'innreg-duplicate',
  'innreg-velocity',
  'innreg-alternating',
];
const allSeeds = s.settings.seeds.length;
const seedsOf = (a) => a.runs.map((r) => r.seed);
// an arm with fewer seeds than the run says so in its label
for (const a of Object.values(arms)) {
  if (a.runs.length < Math.max(3, allSeeds)) a.label += ` [seeds ${seedsOf(a).join(', ')} only]`;
}
const tableOf = (names, baseline) =>
  protocolTable(
    names.filter((n) => arms[n]).map((n) => arms[n]),
    { baseline, identity },
  );
const perSeed = Object.values(arms)
  .map((a) => {
    const dice = valuesOf(a, 'dice').map((v) => (100 * v.reduce((p, q) => p + q, 0)) / v.length);
    return `${a.name} ${dice.map((d) => d.toFixed(1)).join(' / ')}`;
  })
  .join('; ');
const slices = s.settings.deformations;
const what = `${s.settings.size.join('×')}, ${identity.length / slices} test slices × ${slices} deformations, ${Math.max(...Object.values(arms).map((a) => a.runs.length))} seeds, ${s.steps} steps at ${optimiserText}`;
const minutes = stamps.map((x) => `${x.minutes.toFixed(1)} min (${basename(x.dir)})`);
const table = [
  `### A. Barrier ablation, R alone (BraTS T1 → T2, ${what})\n`,
  tableOf(TABLE_A, 'r-one-minus-mi'),
  `\n### B. INNReg against VoxelMorph-MI, same smoothness term, optimiser and budget (${what})\n`,
  tableOf(TABLE_B, 'vm-mi'),
  `\nMean ± standard error over seeds; Δ: paired difference against the baseline (same seeds and test pairs). Per seed (test Dice %): ${perSeed}.${priorNote} Wall time of the ${stamps.length} runs on ${s.backend}: ${minutes.join(', ')}.\n`,
].join('\n');
console.log(table);
mkdirSync(args.out, { recursive: true });
const write = (file, text) => {
  writeFileSync(`${file}.tmp`, text);
  renameSync(`${file}.tmp`, file);
};
write(
  join(args.out, 'results.json'),
  `${JSON.stringify({ runs: stamps, identity, arms }, null, 1)}\n`,
);
write(join(args.out, 'table.md'), table);
