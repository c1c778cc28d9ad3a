import { readFileSync } from 'node:fs';
import { tf } from '@regkit/core';
import { velocityKlLoss } from '@regkit/losses';
import { beforeAll, describe, expect, it } from 'vitest';
import { BACKEND_PATHS, expectClose, tensorOf, useBackend } from './helpers.js';

interface KlCase {
  name: string;
  params: { priorLambda: number };
  inputs: {
    mean: { shape: number[]; data: number[] };
    logVariance: { shape: number[]; data: number[] };
  };
  outputs: {
    loss: number;
    dMean: { shape: number[]; data: number[] };
    dLogVariance: { shape: number[]; data: number[] };
  };
}

const cases = (
  JSON.parse(readFileSync(new URL('./fixtures/kl_fixtures.json', import.meta.url), 'utf8')) as {
    cases: KlCase[];
  }
).cases;

describe.each(BACKEND_PATHS)(
  'velocityKlLoss against a torch port of vxm.losses.KL on %s (%s ops)',
  (backend, path) => {
    beforeAll(async () => {
      await useBackend(backend, path);
    });
    for (const c of cases) {
      it(c.name, () => {
        tf.tidy(() => {
          const m = tensorOf(c.inputs.mean);
          const s = tensorOf(c.inputs.logVariance);
          const f = (a: tf.Tensor, b: tf.Tensor) => velocityKlLoss(a, b, c.params);
          expect(f(m, s).dataSync()[0]).toBeCloseTo(c.outputs.loss, 4);
          const [dm, ds] = tf.grads(f)([m, s]);
          expectClose(dm!, c.outputs.dMean, 1e-6, 1e-4);
          expectClose(ds!, c.outputs.dLogVariance, 1e-6, 1e-4);
        });
      });
    }
  },
);

describe('velocityKlLoss', () => {
  it('is minimised by the prior variance 1/(λD) and a constant mean', () => {
    tf.tidy(() => {
      // interior voxels of a 2D grid have D = 4: optimum σ² = 1/(λ·4)
      const mean = tf.fill([1, 8, 8, 2], 3);
      const opt = tf.fill([1, 8, 8, 2], Math.log(1 / 40));
      const base = velocityKlLoss(mean, opt).dataSync()[0]!;
      const worse = velocityKlLoss(mean, tf.add(opt, 0.3)).dataSync()[0]!;
      expect(worse).toBeGreaterThan(base);
    });
  });
  it('names mismatched shapes and bad λ', () => {
    expect(() => velocityKlLoss(tf.zeros([1, 4, 4, 2]), tf.zeros([1, 4, 5, 2]))).toThrow(
      /'mean' \[1, 4, 4, 2\] and 'logVariance' \[1, 4, 5, 2\] must have the same shape/,
    );
    expect(() =>
      velocityKlLoss(tf.zeros([1, 4, 4, 2]), tf.zeros([1, 4, 4, 2]), { priorLambda: 0 }),
    ).toThrow(/'priorLambda' must be a positive finite number, got 0/);
  });
});
