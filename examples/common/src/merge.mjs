/**
 * Merging the `results.json` of protocol runs that were split over several processes (each
 * with `--arms` or `--similarities` and its own `--out`), so that one table holds them all.
 * Every arm of a run is deterministic given its seeds, so an arm that appears in two runs must
 * have identical test rows: that is checked, and it is what makes paired differences across
 * runs valid (the baseline of one run is the baseline of the other).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The stamp fields that must agree between merged runs (each arm records its own grid). */
const MUST_AGREE = ['settings', 'steps', 'learningRate', 'beta1', 'task', 'quick', 'warmSteps'];

/**
 * The `[key, arm]` pairs of one `results.json`: INNReg layout `arms.{name}` (key `name`), MINE
 * layout `results.{optimiser}[]` (key `optimiser/name`).
 */
function armEntries(r) {
  return r.arms
    ? Object.entries(r.arms)
    : Object.entries(r.results ?? {}).flatMap(([o, list]) =>
        list.map((x) => [`${o}/${x.name}`, x]),
      );
}

/**
 * Reads `dir/results.json` of every dir and returns `{ stamps, identity, arms }`: `arms` maps
 * an arm key to its arm (INNReg layout: `arms.{name}`; MINE layout: `results.{optimiser}[]`,
 * keyed `optimiser/name`). An arm split by seed over runs (`--seeds`) gets the runs of every
 * seed (sorted), its grid from the first run that has it. Throws when the runs' settings
 * (other than the seeds) or identity rows differ, when an arm has two chosen weights, or
 * when one seed of an arm has different test rows in two runs.
 * @param {string[]} dirs
 */
export function mergeRuns(dirs) {
  if (!dirs.length) throw new Error('mergeRuns: no result folders given');
  const stamps = [];
  const arms = {};
  let identity = null;
  for (const dir of dirs) {
    const r = JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8'));
    const { identity: id, arms: a, results, warmStart, ...stamp } = r;
    if (stamps.length) {
      for (const k of MUST_AGREE) {
        // runs split by seed differ in their seeds only
        const norm = (v) => JSON.stringify(k === 'settings' ? { ...v, seeds: undefined } : v);
        if (norm(stamp[k]) !== norm(stamps[0][k])) {
          throw new Error(`mergeRuns: ${dir} differs from ${dirs[0]} in '${k}'`);
        }
      }
      if (JSON.stringify(id) !== JSON.stringify(identity)) {
        throw new Error(`mergeRuns: ${dir} has other identity rows than ${dirs[0]}`);
      }
    } else {
      identity = id;
    }
    stamps.push({ dir, ...stamp, warmStart });
    const found = armEntries(r);
    for (const [key, arm] of found) {
      const have = arms[key];
      if (!have) {
        arms[key] = { ...arm, runs: [...arm.runs] };
        continue;
      }
      if (have.chosen !== arm.chosen) {
        throw new Error(
          `mergeRuns: arm '${key}' has weight ${have.chosen} in one run, ${arm.chosen} in another`,
        );
      }
      for (const run of arm.runs) {
        const same = have.runs.find((r) => r.seed === run.seed);
        if (!same) {
          have.runs.push(run); // a run split by seed: its other seeds
        } else if (JSON.stringify(same.rows) !== JSON.stringify(run.rows)) {
          throw new Error(
            `mergeRuns: arm '${key}' seed ${run.seed} differs between runs (not deterministic?)`,
          );
        }
      }
      have.runs.sort((a, b) => a.seed - b.seed);
    }
  }
  return { stamps, identity, arms };
}

/**
 * `--prior dir…`: an earlier run whose grid search an arm of this one (run at one weight) may
 * take over, when it is the same arm with the same chosen weight and this run reproduces its
 * validation Dice at that weight (seed 1, to 0.05 points): the arm then shows the earlier
 * grid, its label marked ‡. Mutates `arms`; returns the table note ('' when none was taken).
 */
export function adoptPriorGrids(arms, priorDirs) {
  const priorArms = priorDirs.length ? mergeRuns(priorDirs).arms : {};
  let priorUsed = false;
  for (const [key, a] of Object.entries(arms)) {
    const p = priorArms[key] ?? priorArms[key.split('/').pop()];
    if (a.grid.length !== 1 || !p || p.chosen !== a.chosen || !a.runs.some((r) => r.seed === 1)) {
      continue;
    }
    const then = p.grid.find((g) => g.value === a.chosen)?.validationDice;
    if (then !== undefined && Math.abs(then - a.grid[0].validationDice) < 5e-4) {
      a.grid = p.grid;
      a.label += ' ‡';
      priorUsed = true;
    }
  }
  return priorUsed
    ? ` ‡ Weight grid from the earlier run (${priorDirs.join(', ')}) on the same validation pairs: this run reproduces its validation Dice at the chosen weight (seed 1), so its choice stands.`
    : '';
}

/**
 * `--grid-runs dir…`: runs of an arm at its other grid values (seed 1, the same validation
 * pairs), split over processes. Their validation entries join the arm's grid (sorted by
 * value); afterwards every arm's weight must be its grid's best on validation. Mutates
 * `arms`; throws when a run's identity rows differ from `identity` or an arm was run at a
 * weight that is not its grid's best.
 * @param {Record<string, any>} arms from `mergeRuns`
 * @param {unknown} identity from `mergeRuns`
 * @param {string[]} dirs
 */
export function joinGridRuns(arms, identity, dirs) {
  for (const dir of dirs) {
    const r = JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8'));
    if (JSON.stringify(r.identity) !== JSON.stringify(identity)) {
      throw new Error(`--grid-runs ${dir}: other identity rows than the merged runs`);
    }
    for (const [key, g] of armEntries(r)) {
      const a = arms[key];
      if (!a) continue;
      for (const entry of g.grid) {
        if (!a.grid.some((x) => x.value === entry.value)) a.grid = [...a.grid, entry];
      }
      a.grid.sort((x, y) => x.value - y.value);
    }
  }
  for (const a of Object.values(arms)) {
    const best = a.grid.reduce((p, q) => (q.validationDice > p.validationDice ? q : p));
    if (best.value !== a.chosen) {
      throw new Error(
        `${a.name}: run at ${a.chosen}, but ${best.value} is the grid's best on validation`,
      );
    }
  }
}
