/**
 * The protocol's subset flags (--size, --deformations, --grid), its label groups, the
 * non-monotone remap of the MINE example and the merging of split runs.
 * Run: node --test test/ (from examples/common).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { it } from 'node:test';
import { adoptPriorGrids, joinGridRuns, mergeRuns } from '../src/merge.mjs';
import {
  ASEG_GROUPS,
  BRATS_GROUPS,
  parseGrid,
  protocolSettings,
  protocolTable,
} from '../src/protocol.mjs';
import { parabolicRemap } from '../src/slices.mjs';

it('overrides size and deformations, and rejects bad values', () => {
  const s = protocolSettings({ quick: true, size: '96', deformations: '10' });
  assert.deepEqual(s.size, [96, 96]);
  assert.equal(s.deformations, 10);
  assert.equal(s.validationDeformations, 2);
  assert.deepEqual(protocolSettings({ quick: true }).size, [64, 64]);
  assert.throws(() => protocolSettings({ size: '50' }), /multiple of 16/);
  assert.throws(() => protocolSettings({ deformations: '0' }), /positive integer/);
  assert.deepEqual(protocolSettings({ seeds: '2' }).seeds, [2]);
  assert.throws(() => protocolSettings({ seeds: '1,x' }), /positive integers/);
});

it('parses a weight grid and rejects non-positive values', () => {
  assert.deepEqual(parseGrid('1,10,30', [1]), [1, 10, 30]);
  assert.deepEqual(parseGrid(undefined, [0.1, 1]), [0.1, 1]);
  assert.throws(() => parseGrid('1,-3', [1]), /positive/);
  assert.throws(() => parseGrid('1,x', [1]), /positive/);
});

it('groups BraTS labels into tumour / brain and aseg labels into cortex / deep grey matter', () => {
  const [tumour, brain] = BRATS_GROUPS;
  assert.deepEqual([0, 1, 2, 3, 4].map(tumour.test), [false, true, true, true, false]);
  assert.deepEqual([0, 1, 4].map(brain.test), [false, true, true]);
  const [cortex, deep] = ASEG_GROUPS;
  assert.deepEqual([2, 3, 41, 42].map(cortex.test), [false, true, false, true]);
  assert.deepEqual([2, 3, 10, 17, 49, 54, 24].map(deep.test), [
    false,
    false,
    true,
    true,
    true,
    true,
    false,
  ]);
});

it('remaps c ↦ 4c(1 − c) after clipping to [0, 1]: grey matter brighter than white matter', async () => {
  const { tf } = await import('@regkit/core');
  await tf.setBackend('cpu');
  const x = tf.tensor([-0.2, 0, 0.3, 0.55, 0.87, 1, 1.3]);
  const y = Array.from(await parabolicRemap(x).data());
  const want = [0, 0, 0.84, 0.99, 0.4524, 0, 0];
  for (const [i, v] of y.entries()) {
    assert.ok(Math.abs(v - want[i]) < 1e-6, `${i}: ${v} vs ${want[i]}`);
  }
  // not monotone: CSF (0.3) < grey (0.55) in T1 and after; white (0.87) > grey in T1, < after
  assert.ok(y[2] < y[3] && y[4] < y[3]);
  x.dispose();
});

const runOf = (dir, arms, { steps = 100, diceOffset = 0, seed = 1 } = {}) => {
  const arm = (name) => ({
    name,
    label: name,
    gridName: 'λ',
    grid: [{ value: 1, validationDice: 0.5 }],
    chosen: 1,
    runs: [{ seed, rows: [{ dice: 0.5 + diceOffset }] }],
  });
  writeFileSync(
    join(dir, 'results.json'),
    JSON.stringify({
      settings: { size: [64, 64], seeds: [seed] },
      steps,
      identity: [{ dice: 0.4 }],
      arms: Object.fromEntries(arms.map((n) => [n, arm(n)])),
    }),
  );
  return dir;
};

it('merges split runs, and refuses different settings or a non-deterministic arm', () => {
  const tmp = () => mkdtempSync(join(tmpdir(), 'regkit-merge-'));
  const a = runOf(tmp(), ['base', 'x']);
  const b = runOf(tmp(), ['base', 'y']);
  const merged = mergeRuns([a, b]);
  assert.deepEqual(Object.keys(merged.arms).sort(), ['base', 'x', 'y']);
  assert.equal(merged.stamps.length, 2);
  assert.throws(() => mergeRuns([a, runOf(tmp(), ['z'], { steps: 200 })]), /'steps'/);
  assert.throws(
    () => mergeRuns([a, runOf(tmp(), ['base'], { diceOffset: 0.1 })]),
    /differs between runs/,
  );
  // an arm split by seed over runs gets every seed's run, sorted
  const s3 = runOf(tmp(), ['base'], { seed: 3, diceOffset: 0.2 });
  const s2 = runOf(tmp(), ['base'], { seed: 2, diceOffset: 0.1 });
  const bySeed = mergeRuns([a, s3, s2]).arms.base.runs;
  assert.deepEqual(
    bySeed.map((r) => [r.seed, r.rows[0].dice]),
    [
      [1, 0.5],
      [2, 0.6],
      [3, 0.7],
    ],
  );
});

it('adopts an earlier grid only when this run reproduces its validation Dice', () => {
  const prior = mkdtempSync(join(tmpdir(), 'regkit-prior-'));
  writeFileSync(
    join(prior, 'results.json'),
    JSON.stringify({
      settings: { size: [64, 64], seeds: [1] },
      steps: 100,
      identity: [{ dice: 0.4 }],
      arms: {
        x: {
          name: 'x',
          label: 'x',
          gridName: 'λ',
          grid: [
            { value: 0.1, validationDice: 0.4 },
            { value: 1, validationDice: 0.5 },
          ],
          chosen: 1,
          runs: [{ seed: 1, rows: [{ dice: 0.5 }] }],
        },
      },
    }),
  );
  const arm = (validationDice) => ({
    name: 'x',
    label: 'x',
    grid: [{ value: 1, validationDice }],
    chosen: 1,
    runs: [{ seed: 1, rows: [] }],
  });
  const same = { x: arm(0.5) };
  assert.match(adoptPriorGrids(same, [prior]), /earlier run/);
  assert.equal(same.x.grid.length, 2);
  assert.equal(same.x.label, 'x ‡');
  const other = { x: arm(0.45) };
  assert.equal(adoptPriorGrids(other, [prior]), '');
  assert.equal(other.x.grid.length, 1);
  assert.equal(adoptPriorGrids({ x: arm(0.5) }, []), '');
});

it('pairs an arm with the baseline on the seeds both have', () => {
  const row = (dice) => ({ dice, tumour: dice, brain: dice, ncc: 0.5, folding: 0 });
  const arm = (name, seeds, offset) => ({
    name,
    label: name,
    gridName: 'λ',
    grid: [{ value: 1 }],
    chosen: 1,
    runs: seeds.map((seed) => ({
      seed,
      rows: [row(0.5 + offset + seed / 100), row(0.6 + offset)],
    })),
  });
  const table = protocolTable([arm('base', [1, 2, 3], 0), arm('x', [2, 3], 0.1)], {
    baseline: 'base',
  });
  // x − base = +0.1 on both common seeds and both pairs: 10.0 ± 0.0 Dice points
  const line = table.split('\n').find((l) => l.startsWith('| x |'));
  assert.match(line, /\| 10\.0 ± 0\.0 \| 10\.0 ± 0\.0 \|$/);
  assert.match(line, /λ = 1 \(fixed, not tuned\)/);
});

it('joins grid runs split over processes and checks the weight is the grid best', () => {
  const gridRun = (value, validationDice, chosen = value) => {
    const dir = mkdtempSync(join(tmpdir(), 'regkit-grid-'));
    writeFileSync(
      join(dir, 'results.json'),
      JSON.stringify({
        settings: { size: [64, 64], seeds: [1] },
        steps: 100,
        identity: [{ dice: 0.4 }],
        arms: {
          x: {
            name: 'x',
            label: 'x',
            gridName: 'λ',
            grid: [{ value, validationDice }],
            chosen,
            runs: [{ seed: 1, rows: [{ dice: 0.5 }] }],
          },
        },
      }),
    );
    return dir;
  };
  const main = gridRun(1, 0.5);
  const { arms, identity } = mergeRuns([main]);
  joinGridRuns(arms, identity, [gridRun(3, 0.45), gridRun(0.1, 0.3)]);
  assert.deepEqual(
    arms.x.grid.map((g) => [g.value, g.validationDice]),
    [
      [0.1, 0.3],
      [1, 0.5],
      [3, 0.45],
    ],
  );
  // a grid value that beats the chosen weight on validation is refused
  const again = mergeRuns([main]);
  assert.throws(
    () => joinGridRuns(again.arms, again.identity, [gridRun(3, 0.6)]),
    /3 is the grid's best/,
  );
});
