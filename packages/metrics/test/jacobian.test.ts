/**
 * Jacobian statistics against test/fixtures/jacobian_fixtures.json
 * (make_jacobian_fixtures.py: numpy.gradient and numpy.linalg.det in float64), against core's
 * differentiable jacobianDeterminant, and bad input.
 */
import { readFileSync } from 'node:fs';
import { initBackend, jacobianDeterminant, tf } from '@regkit/core';
import { foldingPercent, jacobianStd, logJacobianStd } from '@regkit/metrics';
import { beforeAll, describe, expect, it } from 'vitest';

interface JacobianCase {
  name: string;
  shape: number[];
  field: number[];
  det: number[];
  folding_percent: number;
  det_std: number;
  log_det_std: number;
}
const { cases } = JSON.parse(
  readFileSync(new URL('./fixtures/jacobian_fixtures.json', import.meta.url), 'utf8'),
) as { cases: JacobianCase[] };

beforeAll(async () => {
  await initBackend('cpu');
});

describe('Jacobian statistics', () => {
  for (const c of cases) {
    it(`match numpy on ${c.name} (${c.shape.join('×')})`, async () => {
      const before = tf.memory().numTensors;
      const u = tf.tensor(c.field, c.shape, 'float32');
      // no voxel sits on the fold boundary, so float32 rounding cannot flip a count
      expect(Math.min(...c.det.map(Math.abs))).toBeGreaterThan(1e-4);
      expect(await foldingPercent(u)).toBeCloseTo(c.folding_percent, 10);
      expect(Math.abs((await jacobianStd(u)) - c.det_std)).toBeLessThan(1e-5 * c.det_std);
      // log of small determinants amplifies float32 rounding
      expect(Math.abs((await logJacobianStd(u)) - c.log_det_std)).toBeLessThan(
        1e-3 * c.log_det_std,
      );
      // the same determinants as core's tensor op
      const det = jacobianDeterminant(u);
      const ref = Float64Array.from(c.det);
      const got = await det.data();
      let err = 0;
      for (let i = 0; i < ref.length; i++) err = Math.max(err, Math.abs(got[i]! - ref[i]!));
      expect(err).toBeLessThan(1e-5);
      tf.dispose([u, det]);
      expect(tf.memory().numTensors).toBe(before);
    });
  }

  it('refuses fields that are not [B, ...S, ndim] with every size ≥ 2', async () => {
    const bad = tf.zeros([1, 4, 4, 3]);
    await expect(foldingPercent(bad)).rejects.toThrow(/foldingPercent.*\[1, 4, 4, 3\]/);
    const thin = tf.zeros([1, 1, 4, 4, 3]);
    await expect(logJacobianStd(thin)).rejects.toThrow(/logJacobianStd.*at least 2/);
    tf.dispose([bad, thin]);
  });
});
