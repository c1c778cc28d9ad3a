/**
 * Parzen MI and NMI against test/fixtures/mi_fixtures.json (make_mi_fixtures.py: a port of
 * MONAI's GlobalMutualInformationLoss in PyTorch, autograd gradients), plus behaviour:
 * invariance to an intensity permutation, sensitivity to misalignment, no NaN on constants.
 */
import { readFileSync } from 'node:fs';
import { tf, warp } from '@regkit/core';
import {
  localMutualInformationLoss,
  mutualInformationLoss,
  normalizedMutualInformationLoss,
} from '@regkit/losses';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  BACKEND_PATHS,
  checkGradient,
  expectClose,
  type FixtureCase,
  tensorOf,
  useBackend,
} from './helpers.js';

const cases = (
  JSON.parse(readFileSync(new URL('./fixtures/mi_fixtures.json', import.meta.url), 'utf8')) as {
    cases: FixtureCase[];
  }
).cases;

describe.each(BACKEND_PATHS)('mutual information on %s (%s ops)', (backend, path) => {
  beforeAll(() => useBackend(backend, path));

  it.each(cases)('$name', (c) => {
    tf.tidy(() => {
      const a = tensorOf(c.inputs.a!);
      const b = tensorOf(c.inputs.b!);
      const opts = {
        ...(c.params.bins ? { bins: c.params.bins as number } : {}),
        ...(c.params.sigmaRatio ? { sigmaRatio: c.params.sigmaRatio as number } : {}),
        ...(c.params.range ? { intensityRange: c.params.range as [number, number] } : {}),
      };
      const f =
        c.op === 'mutualInformationLoss'
          ? (x: tf.Tensor, y: tf.Tensor) => mutualInformationLoss(x, y, opts)
          : (x: tf.Tensor, y: tf.Tensor) =>
              tf.neg(normalizedMutualInformationLoss(x, y, opts)) as tf.Scalar; // the fixture holds NMI
      const key = c.op === 'mutualInformationLoss' ? 'loss' : 'nmi';
      expectClose(f(a, b), c.outputs[key]!, 1e-4, 1e-4);
      const [dA, dB] = tf.grads(f)([a, b]);
      expectClose(dA!, c.outputs.dA!, 1e-6, 1e-3);
      expectClose(dB!, c.outputs.dB!, 1e-6, 1e-3);
    });
  });

  it('an intensity permutation keeps MI of an aligned pair; misalignment lowers it; constants give no NaN', () => {
    tf.tidy(() => {
      // piecewise-constant image with 6 tissue classes, and a "modality" that permutes them
      const classes = tf.floor(tf.mul(tf.randomUniform([1, 24, 24, 1], 0, 1, 'float32', 5), 6));
      const t1 = tf.div(classes, 5);
      const other = tf.div(
        tf.gather(tf.tensor1d([3, 0, 5, 1, 4, 2]), tf.cast(classes, 'int32')),
        5,
      );
      const aligned = mutualInformationLoss(t1, other).dataSync()[0]!;
      const self = mutualInformationLoss(t1, t1).dataSync()[0]!;
      expect(Math.abs(aligned - self)).toBeLessThan(1e-3 * Math.abs(self));
      const shift = tf.mul(tf.ones([1, 24, 24, 2]), tf.tensor1d([0, 1.5]));
      const moved = warp(other, shift, { padding: 'border' });
      expect(mutualInformationLoss(t1, moved).dataSync()[0]!).toBeGreaterThan(aligned + 0.1);
      const constant = tf.fill([1, 8, 8, 1], 0.5);
      for (const v of [
        mutualInformationLoss(constant, constant),
        normalizedMutualInformationLoss(constant, tf.slice(t1, [0, 0, 0, 0], [1, 8, 8, 1])),
        localMutualInformationLoss(constant, constant, { patchSize: 4 }),
      ]) {
        expect(Number.isFinite(v.dataSync()[0]!)).toBe(true);
      }
    });
  });

  it('local MI averages patch MIs and its gradients match finite differences', () => {
    tf.tidy(() => {
      const a = tf.randomUniform([1, 12, 10, 1], 0, 1, 'float32', 8);
      const b = tf.sqrt(a);
      // one patch covering the image equals the global MI
      const whole = localMutualInformationLoss(a, b, { patchSize: [12, 10] }).dataSync()[0]!;
      expect(whole).toBeCloseTo(mutualInformationLoss(a, b).dataSync()[0]!, 5);
      checkGradient(
        (x, y) => localMutualInformationLoss(x!, y!, { patchSize: [6, 5], bins: 8 }),
        [a, b],
        {
          eps: 1e-3,
          rtol: 3e-2,
          atol: 1e-4,
        },
      );
    });
  });
});
