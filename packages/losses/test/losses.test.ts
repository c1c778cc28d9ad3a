/**
 * Every loss against test/fixtures/loss_fixtures.json (make_loss_fixtures.py: PyTorch
 * autograd, numpy, a literal port of MONAI's bending energy), on cpu and wasm, with
 * core's kernels and with its portable ops; plus closed forms, finite differences,
 * memory and error paths.
 */
import { initBackend, randomSmoothField, tf } from '@regkit/core';
import {
  bendingEnergyLoss,
  diffusionLoss,
  globalNccLoss,
  inverseConsistencyLoss,
  jacobianFoldingLoss,
  l1Loss,
  localNccLoss,
  mseLoss,
  rmsLoss,
} from '@regkit/losses';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  BACKEND_PATHS,
  checkGradient,
  expectClose,
  loadCases,
  tensorOf,
  useBackend,
} from './helpers.js';

type Loss = (...args: tf.Tensor[]) => tf.Scalar;
const LOSSES: Record<string, (params: Record<string, unknown>) => Loss> = {
  mseLoss: () => mseLoss,
  l1Loss: () => l1Loss,
  rmsLoss: () => rmsLoss,
  globalNccLoss: () => globalNccLoss,
  localNccLoss: (p) => (a, b) => localNccLoss(a!, b!, { window: p.window as number }),
  diffusionLoss: () => diffusionLoss,
  bendingEnergyLoss: () => bendingEnergyLoss,
  inverseConsistencyLoss: () => inverseConsistencyLoss,
  jacobianFoldingLoss: (p) => (u) =>
    jacobianFoldingLoss(u!, { epsilon: (p.epsilon as number) ?? 0 }),
};

const cases = loadCases();

describe.each(BACKEND_PATHS)('losses on %s (%s ops)', (backend, path) => {
  beforeAll(() => useBackend(backend, path));

  it.each(cases)('$name', (c) => {
    tf.tidy(() => {
      const make = LOSSES[c.op];
      expect(make, `unknown op ${c.op}`).toBeDefined();
      const loss = make!(c.params);
      const names = Object.keys(c.inputs);
      const xs = names.map((n) => tensorOf(c.inputs[n]!));
      const outKey = Object.keys(c.outputs).find((k) => !k.startsWith('d') || k === 'dummy')!;
      expectClose(loss(...xs), c.outputs[outKey]!, 1e-4, 1e-4);
      const grads = tf.grads((...ys: tf.Tensor[]) => loss(...ys))(xs);
      names.forEach((n, i) => {
        const key = `d${n[0]!.toUpperCase()}${n.slice(1)}`;
        if (c.outputs[key]) expectClose(grads[i]!, c.outputs[key]!, 1e-5, 1e-3);
      });
    });
  });
});

describe.each(BACKEND_PATHS)('closed forms and gradients on %s (%s ops)', (backend, path) => {
  beforeAll(() => useBackend(backend, path));

  it('NCC is −1 for a positive linear relation and +1 for a negative one', () => {
    tf.tidy(() => {
      const a = tf.randomUniform([2, 12, 11, 9, 1], 0, 1, 'float32', 1);
      expect(globalNccLoss(a, tf.add(tf.mul(a, 3), 2)).dataSync()[0]).toBeCloseTo(-1, 4);
      expect(globalNccLoss(a, tf.mul(a, -0.5)).dataSync()[0]).toBeCloseTo(1, 4);
      // local cc is squared: −1 for either sign (up to the 1e−5 in the denominator); no offset,
      // since the zero padding of the box sums breaks b = 3a + 2 near the borders
      expect(localNccLoss(a, tf.mul(a, 3), { window: 5 }).dataSync()[0]).toBeLessThan(-0.99);
      expect(localNccLoss(a, tf.mul(a, -2), { window: 5 }).dataSync()[0]).toBeLessThan(-0.99);
    });
  });

  it('regularisers vanish where they should', () => {
    tf.tidy(() => {
      const shift = tf.mul(tf.ones([1, 9, 8, 7, 3]), tf.tensor1d([0.3, -0.2, 0.1]));
      expect(diffusionLoss(shift).dataSync()[0]).toBe(0);
      expect(
        jacobianFoldingLoss(
          randomSmoothField([9, 8, 7], { maxDisplacement: 1, controlSpacing: 4 }),
        ).dataSync()[0],
      ).toBe(0);
      // an affine field has zero second derivatives
      const affine = tf.reshape(tf.mul(tf.range(0, 9 * 8 * 7 * 3), 0.01), [1, 9, 8, 7, 3]);
      expect(Math.abs(bendingEnergyLoss(affine).dataSync()[0]!)).toBeLessThan(1e-9);
      // a constant shift and its negation are exact inverses inside the image
      expect(inverseConsistencyLoss(shift, tf.neg(shift)).dataSync()[0]).toBeLessThan(1e-10);
    });
  });

  it('gradients match finite differences', () => {
    tf.tidy(() => {
      const a = tf.randomUniform([1, 10, 9, 8, 1], 0, 1, 'float32', 2);
      const b = tf.randomUniform([1, 10, 9, 8, 1], 0, 1, 'float32', 3);
      checkGradient((x, y) => localNccLoss(x!, y!, { window: 5 }), [a, b]);
      checkGradient((x, y) => globalNccLoss(x!, y!), [a, b]);
      checkGradient((x, y) => rmsLoss(x!, y!), [a, b]);
      const u = randomSmoothField([10, 9, 8], { maxDisplacement: 2, controlSpacing: 3, seed: 4 });
      const v = randomSmoothField([10, 9, 8], { maxDisplacement: 2, controlSpacing: 3, seed: 5 });
      checkGradient((x) => diffusionLoss(x!), [u]);
      checkGradient((x) => bendingEnergyLoss(x!), [u]);
      checkGradient((x, y) => inverseConsistencyLoss(x!, y!), [u, v], {
        eps: 1e-3,
        rtol: 3e-2,
        atol: 1e-3,
      });
      checkGradient((x) => jacobianFoldingLoss(x!, { epsilon: 0.9 }), [u], {
        eps: 1e-3,
        rtol: 3e-2,
        atol: 1e-3,
      });
    });
  });

  it('a 300-step loop keeps tf.memory flat', () => {
    const a = tf.randomUniform([1, 12, 12, 10, 1], 0, 1, 'float32', 6);
    const b = tf.randomUniform([1, 12, 12, 10, 1], 0, 1, 'float32', 7);
    const u = randomSmoothField([12, 12, 10], { maxDisplacement: 1, controlSpacing: 4 });
    const step = () =>
      tf
        .tidy(() => {
          const losses = [
            localNccLoss(a, b),
            globalNccLoss(a, b),
            mseLoss(a, b),
            diffusionLoss(u),
            bendingEnergyLoss(u),
            inverseConsistencyLoss(u, tf.neg(u)),
            jacobianFoldingLoss(u),
          ];
          return tf.grads((x: tf.Tensor) => tf.addN([localNccLoss(x, b), ...losses.slice(1)]))([
            a,
          ])[0]!;
        })
        .dispose();
    step();
    const before = tf.memory().numTensors;
    for (let i = 0; i < 300; i++) step();
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([a, b, u]);
  });
});

describe('errors', () => {
  it('names the function, argument and shape', async () => {
    await initBackend('cpu');
    expect(() => mseLoss(tf.zeros([1, 4, 4, 1]), tf.zeros([1, 4, 5, 1]))).toThrow(
      /mseLoss\(\): 'a' \[1, 4, 4, 1\] and 'b' \[1, 4, 5, 1\] must have the same shape/,
    );
    expect(() =>
      localNccLoss(tf.zeros([1, 4, 4, 1]), tf.zeros([1, 4, 4, 1]), { window: 4 }),
    ).toThrow(/localNccLoss\(\): 'window' must be odd positive integers, got 4/);
    expect(() => bendingEnergyLoss(tf.zeros([1, 4, 9, 2]))).toThrow(/at least 5/);
    expect(() => diffusionLoss(tf.zeros([1, 4, 4, 1]))).toThrow(
      /diffusionLoss\(\): 'field' must be a displacement field/,
    );
  });
});
