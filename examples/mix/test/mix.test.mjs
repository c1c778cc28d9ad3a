/**
 * The mix plumbing: every combination of src/combinations.mjs builds from the shared parts,
 * trains one step through `trainRegistration` / `trainFire` (its weights move; a frozen
 * MASR-Net does not; a MINE estimator trains with the model), and registers a pair through
 * the common `{ forward }` output. On the bundled ITK/BrainWeb T1 → PD slice at 32×32 (no
 * read-only data needed). Run: node --test test/ (from examples/mix).
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { tf } from '@regkit/core';
import { initExampleBackend } from '@regkit/example-common/backend';
import { itkPairDataset, trainingPair } from '@regkit/example-common/slices';
import { loadMasrNet } from '@regkit/networks';
import { ARMS, dnsSimilarity, GROUPS } from '../src/combinations.mjs';
import { joinGroupGridRuns, mergeGroupRuns } from '../src/merge.mjs';

const SIZE = [32, 32];
let dataset;
let masr;
const pairOf = (i) => trainingPair(dataset, i, { maxDisplacement: 3, controlSpacing: 12 });

/** Copies of every weight of a module, as plain arrays by path. */
function snapshot(module) {
  return new Map(module.namedVariables().map(([path, v]) => [path, Array.from(v.dataSync())]));
}

/** Largest absolute change of any weight between two snapshots of the same module. */
function maxChange(a, b) {
  let max = 0;
  for (const [path, values] of a) {
    const other = b.get(path);
    assert.ok(other, `weight '${path}' disappeared`);
    for (let i = 0; i < values.length; i++) max = Math.max(max, Math.abs(values[i] - other[i]));
  }
  return max;
}

before(async () => {
  await initExampleBackend();
  dataset = await itkPairDataset(SIZE);
  ({ model: masr } = await loadMasrNet());
});

describe('every combination', () => {
  it('has a group with a parent, and every group has its baseline arm', () => {
    for (const [name, arm] of Object.entries(ARMS)) {
      assert.ok(GROUPS[arm.group], `${name}: unknown group ${arm.group}`);
      for (const k of ['check', 'small', 'full'])
        assert.ok(arm.grid[k].length >= 1, `${name} ${k}`);
    }
    for (const [g, spec] of Object.entries(GROUPS)) {
      assert.equal(ARMS[spec.baseline]?.group, g);
      assert.ok(ARMS[spec.baseline].parent, `${g}: the baseline must be a parent method`);
      assert.ok(
        Object.values(ARMS).some((a) => a.group === g && !a.parent),
        `${g} has no mix`,
      );
    }
  });

  for (const [name, arm] of Object.entries(ARMS)) {
    it(`${name}: builds, trains one step and registers a pair`, async () => {
      const masrBefore = snapshot(masr);
      let initial = null;
      let warm = null;
      const tensorsBefore = tf.memory().numTensors;
      const result = await arm.build({
        value: arm.grid.check[0],
        seed: 1,
        data: (epoch, step) => pairOf(epoch + step),
        epochs: 1,
        stepsPerEpoch: 1,
        masr,
        warmSteps: 2,
        warmData: (i) => pairOf(100 + i),
        log: (w) => {
          warm = w;
        },
        onInit: (model) => {
          initial = snapshot(model);
        },
        size: SIZE,
        iterations: [2, 2, 2],
      });
      if (arm.group !== 'io') {
        assert.ok(initial, 'onInit was not called before training');
        assert.ok(maxChange(initial, snapshot(result.model)) > 0, 'one step moved no weight');
      }
      // the MASR-Net is a frozen FeatureExtractor: no arm may train it
      assert.equal(maxChange(masrBefore, snapshot(masr)), 0, 'the MASR-Net weights changed');
      if (name === 'sitreg-mine') {
        assert.ok(warm && Number.isFinite(warm.before) && Number.isFinite(warm.after));
        assert.equal(typeof result.similarity.loss, 'function', 'MINE is a SimilarityModule');
        assert.ok(result.similarity.namedVariables().length > 0);
      }
      const pair = pairOf(7);
      const out = await result.register(pair.moving, pair.fixed);
      assert.deepEqual(out.forward.shape, [1, ...SIZE, 2]);
      const u = await out.forward.data();
      assert.ok(u.every(Number.isFinite), 'non-finite displacement');
      if (arm.group === 'io')
        assert.ok(
          u.some((v) => v !== 0),
          'the optimiser did not move',
        );
      tf.dispose(Object.values(out).filter((t) => t instanceof tf.Tensor));
      tf.dispose([pair.moving, pair.fixed]);
      result.dispose();
      // nothing of the arm stays allocated (small slack: the backend's cached constants)
      assert.ok(
        tf.memory().numTensors <= tensorsBefore + 4,
        `${tf.memory().numTensors - tensorsBefore} tensors left allocated`,
      );
    });
  }
});

describe('dnsSimilarity', () => {
  it('is lower for an aligned pair than for a shifted one, and differentiable in the moving image', () => {
    const { fixed, moving } = dataset.slices.get(0);
    const sim = dnsSimilarity(masr);
    const shifted = tf.tidy(() =>
      tf.concat([tf.slice(moving, [0, 4, 0, 0], [1, 28, 32, 1]), tf.zeros([1, 4, 32, 1])], 1),
    );
    const aligned = sim(fixed, moving).dataSync()[0];
    const off = sim(fixed, shifted).dataSync()[0];
    assert.ok(aligned < off, `aligned ${aligned} ≥ shifted ${off}`);
    const g = tf.grad((m) => sim(fixed, m))(moving);
    const norm = tf.norm(g).dataSync()[0];
    assert.ok(Number.isFinite(norm) && norm > 0, `gradient norm ${norm}`);
    tf.dispose([shifted, g]);
  });
});

describe('mergeGroupRuns', () => {
  const group = (arms, extra = {}) => ({
    group: 'voxelmorph',
    settings: { size: [96, 96], seeds: [1, 2, 3] },
    steps: 600,
    gridKind: 'full',
    quick: false,
    identity: [{ dice: 0.5 }],
    minutes: 2,
    warmStart: [],
    arms: arms.map((name) => ({ name, runs: [] })),
    ...extra,
  });
  it('joins arms in ARMS order, the later run winning, and adds the minutes', () => {
    const m = mergeGroupRuns(group(['vxm-dns', 'vxm-mi']), group(['vxm-ncc', 'vxm-mi']), 'x');
    assert.deepEqual(
      m.arms.map((a) => a.name),
      ['vxm-mi', 'vxm-ncc', 'vxm-dns'],
    );
    assert.equal(m.minutes, 4);
  });
  it('refuses runs with other settings, naming the field', () => {
    assert.throws(
      () => mergeGroupRuns(group(['vxm-mi']), group(['vxm-ncc'], { steps: 200 }), 'f.json'),
      /f\.json holds a run with another 'steps'/,
    );
    assert.throws(
      () =>
        mergeGroupRuns(group(['vxm-mi']), group(['vxm-ncc'], { identity: [{ dice: 0.4 }] }), 'f'),
      /'identity'/,
    );
  });
});

describe('joinGroupGridRuns', () => {
  const run = (seed) => ({ seed, trainSeconds: 1, rows: [{ dice: 0.7 + seed / 100 }] });
  const arm = (name, grid, chosen, seeds) => ({
    name,
    grid: grid.map(([value, validationDice]) => ({ value, validationDice, validationFolding: 0 })),
    chosen,
    runs: seeds.map(run),
  });
  const group = (arms, seeds = [1, 2, 3], extra = {}) => ({
    group: 'voxelmorph',
    settings: { size: [96, 96], deformations: 10, validationDeformations: 4, seeds },
    steps: 600,
    gridKind: 'full',
    quick: false,
    identity: [{ dice: 0.5 }],
    date: '2026-12-07T23:00:00Z',
    arms,
    ...extra,
  });
  const full = () =>
    group([
      arm(
        'vxm-mi',
        [
          [1, 0.6],
          [3, 0.62],
          [10, 0.65],
        ],
        10,
        [1, 2, 3],
      ),
      arm(
        'vxm-ncc',
        [
          [1, 0.6],
          [3, 0.64],
          [10, 0.63],
        ],
        3,
        [1, 2, 3],
      ),
    ]);
  it('adds the extension to the grid (sorted) and keeps the runs when the choice stands', () => {
    const ext = group([arm('vxm-mi', [[30, 0.64]], 30, [1])], [1], { gridKind: 'custom' });
    const j = joinGroupGridRuns(full(), ext, 'f');
    const mi = j.arms.find((a) => a.name === 'vxm-mi');
    assert.deepEqual(
      mi.grid.map((g) => g.value),
      [1, 3, 10, 30],
    );
    assert.equal(mi.chosen, 10);
    assert.deepEqual(mi.runs, full().arms[0].runs);
    assert.deepEqual(j.arms[1], full().arms[1]);
  });
  it('refuses an extension that wins without runs on every seed, naming the command', () => {
    const ext = group([arm('vxm-mi', [[30, 0.7]], 30, [1])], [1]);
    assert.throws(
      () => joinGroupGridRuns(full(), ext, 'f.json'),
      /f\.json.*vxm-mi ran at 10, but 30 is its grid's best.*--arms vxm-mi --grid 30/,
    );
  });
  it('takes the runs of an extension that wins and ran every seed', () => {
    const ext = group([arm('vxm-mi', [[30, 0.7]], 30, [1, 2, 3])]);
    const mi = joinGroupGridRuns(full(), ext, 'f').arms[0];
    assert.equal(mi.chosen, 30);
    assert.deepEqual(
      mi.grid.map((g) => g.value),
      [1, 3, 10, 30],
    );
  });
  it('refuses extensions with other settings', () => {
    const ext = group([arm('vxm-mi', [[30, 0.6]], 30, [1])], [1], { steps: 200 });
    assert.throws(() => joinGroupGridRuns(full(), ext, 'f'), /another 'steps'/);
  });
});
