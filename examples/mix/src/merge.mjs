/**
 * Merging the group files (`<out>/<group>.json`) of examples/mix runs whose arms ran in
 * separate processes (`--arms`), into one file per group.
 */
import { ARMS } from './combinations.mjs';

/**
 * Group file `b` merged into `a` (the same group run in several processes): the union of
 * their arms in ARMS order, an arm in both taken from `b`, their minutes added. Throws,
 * naming `where`, when settings, steps, grid kind or identity rows differ.
 */
export function mergeGroupRuns(a, b, where) {
  const same = (x, y) => JSON.stringify(x) === JSON.stringify(y);
  for (const k of ['group', 'settings', 'steps', 'gridKind', 'quick', 'warmSteps', 'identity']) {
    if (!same(a[k], b[k])) {
      throw new Error(`${where} holds a run with another '${k}': use another --out`);
    }
  }
  const fromB = new Set(b.arms.map((x) => x.name));
  const order = Object.keys(ARMS);
  return {
    ...b,
    minutes: a.minutes + b.minutes,
    warmStart: [...(a.warmStart ?? []), ...(b.warmStart ?? [])],
    arms: [...a.arms.filter((x) => !fromB.has(x.name)), ...b.arms].sort(
      (x, y) => order.indexOf(x.name) - order.indexOf(y.name),
    ),
  };
}

/**
 * Group file `a` (the full protocol) joined with `ext`, a run of some of its arms at other
 * grid values (`--arms … --grid … [--seeds 1]`, the same group, budget, sizes and identity
 * rows): their validation entries join each arm's grid (sorted by value). Afterwards every
 * arm must run at its grid's best value on validation: its own runs when the best is its
 * chosen value, else the runs of `ext` when `ext` ran that value on every seed of `a`.
 * Throws, naming `where`, on other settings or when an arm's best value has no such runs.
 */
export function joinGroupGridRuns(a, ext, where) {
  const same = (x, y) => JSON.stringify(x) === JSON.stringify(y);
  const { seeds: _s1, ...settingsA } = a.settings;
  const { seeds: _s2, ...settingsB } = ext.settings;
  if (!same(settingsA, settingsB)) {
    throw new Error(`${where}: a grid run with other settings (sizes, deformations)`);
  }
  for (const k of ['group', 'steps', 'quick', 'warmSteps', 'identity']) {
    if (!same(a[k], ext[k])) throw new Error(`${where}: a grid run with another '${k}'`);
  }
  const arms = a.arms.map((arm) => {
    const e = ext.arms.find((x) => x.name === arm.name);
    if (!e) return arm;
    const grid = [...arm.grid];
    for (const entry of e.grid) if (!grid.some((x) => x.value === entry.value)) grid.push(entry);
    grid.sort((x, y) => x.value - y.value);
    const best = grid.reduce((p, q) => (q.validationDice > p.validationDice ? q : p));
    if (best.value === arm.chosen) return { ...arm, grid };
    if (
      e.chosen === best.value &&
      same(
        e.runs.map((r) => r.seed),
        arm.runs.map((r) => r.seed),
      )
    ) {
      return { ...arm, grid, chosen: e.chosen, runs: e.runs };
    }
    throw new Error(
      `${where}: ${arm.name} ran at ${arm.chosen}, but ${best.value} is its grid's best on validation: run its seeds ${a.settings.seeds.join(',')} at ${best.value} (--arms ${arm.name} --grid ${best.value})`,
    );
  });
  return { ...a, arms, gridRuns: [...(a.gridRuns ?? []), ext.date] };
}
