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
