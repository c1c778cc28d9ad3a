/**
 * The protocol's slice split: training, validation and test slices are disjoint, test and
 * validation slices as documented, training slices ≥ 3 from every test slice and ≥ 2 from
 * every validation slice. Run: node --test test/ (from examples/common).
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { PAIR_OPTIONS, protocolSettings, protocolSplit } from '../src/protocol.mjs';

it('splits BraTS slices 40–120 into disjoint training, validation and test slices', () => {
  const zs = Array.from({ length: 81 }, (_, i) => 40 + i);
  const { train, validation, test } = protocolSplit(zs);
  assert.deepEqual(test, [45, 55, 65, 75, 85, 95, 105, 115]);
  assert.deepEqual(validation, [40, 60, 80, 100, 120]);
  for (const z of train) {
    assert.ok(
      test.every((t) => Math.abs(z - t) >= 3),
      `training slice ${z} near a test slice`,
    );
    assert.ok(
      validation.every((v) => Math.abs(z - v) >= 2),
      `training slice ${z} near validation`,
    );
  }
  assert.ok(train.length >= 20, `only ${train.length} training slices`);
});

it('uses ≥ 3 seeds, ≥ 8 test slices × ≥ 5 deformations and fold-free |u| ≤ 8 voxels', () => {
  for (const quick of [true, false]) {
    const s = protocolSettings({ quick });
    assert.ok(s.seeds.length >= 3);
    assert.ok(s.deformations >= (quick ? 5 : 10));
  }
  assert.equal(PAIR_OPTIONS.maxDisplacement, 8);
  assert.ok(PAIR_OPTIONS.maxDisplacement < 0.4 * PAIR_OPTIONS.controlSpacing);
});
