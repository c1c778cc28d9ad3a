#!/usr/bin/env node
/**
 * The MINE tables of one task from protocol runs split over several processes:
 *
 *   node src/table.mjs <dir> [<dir> …] [--out results/<task>]
 *
 * Each <dir> holds the `results.json` of `src/run.mjs --out <dir> …` for the same task and
 * settings (checked, as is the determinism of an arm present twice: `mergeRuns`). One table
 * per optimiser, paired differences against VM-NCC of the same optimiser. Writes
 * `results.json` and `table.md` to --out.
 */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { adoptPriorGrids, joinGridRuns, mergeRuns } from '@regkit/example-common/merge';
import {
  ASEG_GROUPS,
  BRATS_GROUPS,
  protocolTable,
  valuesOf,
} from '@regkit/example-common/protocol';

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
/**
 * `--prior dir`: an earlier run whose grid search an arm of this one (run at one weight) may
 * take over, when it is the same arm with the same chosen weight and this run reproduces its
 * validation Dice at that weight (seed 1, to 0.05 points): then the arm shows the earlier grid,
 * marked ‡.
 */
joinGridRuns(arms, identity, args['grid-runs']);
const priorNote = adoptPriorGrids(arms, args.prior);
const task = s.task ?? 'brats-flair';
const groups = task === 'vxm-remap' ? ASEG_GROUPS : BRATS_GROUPS;
const TASK_NAME = {
  'brats-flair': 'BraTS T1 → FLAIR',
  'vxm-remap': 'VoxelMorph T1 → remapped T1 (aseg)',
};
const ORDER = ['ncc', 'mi', 'mine-local', 'mine-global'];
// an arm with fewer than 3 seeds says so in its label
for (const a of Object.values(arms)) {
  if (a.runs.length < 3) a.label += ` [seeds ${a.runs.map((r) => r.seed).join(', ')} only]`;
}
const optimisers = {};
for (const x of stamps) Object.assign(optimisers, x.optimisers);
const slices = s.settings.deformations;
const tables = [];
const perSeed = [];
for (const [o, opt] of Object.entries(optimisers)) {
  const list = ORDER.map((n) => arms[`${o}/${n}`]).filter(Boolean);
  if (!list.length) continue;
  tables.push(
    `### ${TASK_NAME[task]}, ${opt.label} (${identity.length / slices} test slices × ${slices} deformations, ${Math.max(...list.map((a) => a.runs.length))} seeds, ${s.steps} steps)\n\n${protocolTable(list, { baseline: 'ncc', identity, groups })}\n`,
  );
  for (const a of list) {
    const dice = valuesOf(a, 'dice').map((v) => (100 * v.reduce((p, q) => p + q, 0)) / v.length);
    const grid = a.grid.map((g) => `α ${g.value}: ${(100 * g.validationDice).toFixed(1)}`);
    perSeed.push(
      `${o}/${a.name}: test ${dice.map((d) => d.toFixed(1)).join(' / ')}; validation (seed 1) ${grid.join(', ')}`,
    );
  }
}
const warm = stamps
  .flatMap((x) => x.warmStart ?? [])
  .map((w) => `${w.name} seed ${w.seed}: ${w.before.toFixed(3)} → ${w.after.toFixed(3)} nats`);
const minutes = stamps.map((x) => `${x.minutes.toFixed(1)} min (${basename(x.dir)})`);
const table = `${tables.join('\n')}
Mean ± standard error over seeds; Δ: paired difference against VM-NCC of the same optimiser (same seeds and test pairs).${priorNote}

Per seed (test Dice %) and validation grids: ${perSeed.join('; ')}.

MINE warm start (estimate on unregistered pairs): ${warm.join('; ') || '–'}.

Wall time of the ${stamps.length} parallel runs on ${s.backend}: ${minutes.join(', ')}.
`;
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
