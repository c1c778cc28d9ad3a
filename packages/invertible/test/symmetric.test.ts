/**
 * symmetricUpdate: exact swap symmetry, forward ∘ inverse ≈ identity, A(a, a) gives the
 * identity, gradients through both inversions against finite differences, leaks, errors; and the
 * SVF alternative (core's integrateVelocity with invertVelocity) against invertField.
 */
import { composeFields, integrateVelocity, randomSmoothField, tf } from '@regkit/core';
import {
  boundedCubicSplineDeformation,
  invertField,
  invertVelocity,
  symmetricUpdate,
} from '@regkit/invertible';
import { beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS, checkGradient, maxAbs, useBackend } from './helpers.js';

/**
 * A SITReg-style auxiliary network: a per-voxel linear map (a 1×1 convolution) of
 * [a − b, a + b] to control points, then the bounded spline (factor 2). Not symmetric itself.
 */
function makeNet(weights: tf.Tensor, shape: number[]) {
  return (a: tf.Tensor, b: tf.Tensor) => {
    const nd = shape.length;
    const x = tf.concat([tf.sub(a, b), tf.add(a, b)], -1);
    const channels = x.shape[x.rank - 1]!;
    const c = tf.reshape(tf.matMul(tf.reshape(x, [-1, channels]), weights), [
      ...a.shape.slice(0, -1),
      nd,
    ]);
    return boundedCubicSplineDeformation(c, shape, { upsamplingFactor: 2 });
  };
}

function cropped(t: tf.Tensor, margin: number): tf.Tensor {
  const spatial: number[] = t.shape.slice(1, -1);
  return tf.slice(
    t,
    [0, ...spatial.map(() => margin), 0],
    [-1, ...spatial.map((s) => s - 2 * margin), -1],
  );
}

describe.each(BACKENDS)('symmetricUpdate on %s', (backend) => {
  beforeAll(() => useBackend(backend));

  it('swapping the inputs swaps forward and inverse exactly; forward ∘ inverse ≈ identity', () => {
    for (const grid of [
      [10, 9],
      [5, 6, 5],
    ]) {
      tf.tidy(() => {
        const nd = grid.length;
        const w = tf.randomNormal([2 * nd, nd], 0, 1, 'float32', 1);
        const net = makeNet(
          w,
          grid.map((g) => 2 * g),
        );
        // smooth features (white-noise features give control points as rough as the bound
        // allows, and resampling errors of the compositions of the order of a voxel)
        const smooth = { maxDisplacement: 1, controlSpacing: 3, batch: 2 };
        const a = randomSmoothField(grid, { ...smooth, seed: 2 });
        const b = randomSmoothField(grid, { ...smooth, seed: 3 });
        const ab = symmetricUpdate(net, a, b);
        const ba = symmetricUpdate(net, b, a);
        expect(maxAbs(tf.sub(ab.forward, ba.inverse))).toBe(0);
        expect(maxAbs(tf.sub(ab.inverse, ba.forward))).toBe(0);
        expect(maxAbs(ab.forward)).toBeGreaterThan(0.3);
        // inverse consistent up to the inversion tolerance and linear resampling
        for (const e of [
          composeFields(ab.forward, ab.inverse),
          composeFields(ab.inverse, ab.forward),
        ]) {
          expect(maxAbs(cropped(e, 2))).toBeLessThan(0.15);
          expect(tf.mean(tf.abs(e)).dataSync()[0]).toBeLessThan(0.01);
        }
        // A(a, a) ∘ A(a, a)⁻¹ is the identity
        const same = symmetricUpdate(net, a, a, { tolerance: 1e-4 });
        expect(maxAbs(same.forward)).toBeLessThan(1e-4);
        expect(maxAbs(same.inverse)).toBeLessThan(1e-4);
      });
    }
  });

  it('gradients with respect to the network weights match finite differences', () => {
    tf.tidy(() => {
      const grid = [6, 5];
      const a = tf.randomNormal([1, ...grid, 2], 0, 1, 'float32', 4);
      const b = tf.randomNormal([1, ...grid, 2], 0, 1, 'float32', 5);
      const w0 = tf.randomNormal([4, 2], 0, 0.5, 'float32', 6);
      const probe = tf.randomUniform([1, 12, 10, 2], -1, 1, 'float32', 7);
      const tight = { tolerance: 1e-6, maxIterations: 200, backward: { tolerance: 1e-6 } };
      checkGradient(
        (w) => {
          const { forward, inverse } = symmetricUpdate(makeNet(w, [12, 10]), a, b, tight);
          return tf.sum(tf.mul(tf.add(forward, tf.mul(inverse, 0.5)), probe)) as tf.Scalar;
        },
        w0,
        // small steps: the loss has kinks where samples cross voxel boundaries (the implicit
        // gradient equals the taped unrolled iteration's to 1e−6 here)
        { eps: 2e-3, rtol: 2e-2, atol: 1e-3 },
      );
    });
  });

  it('leaks nothing over 20 training steps', () => {
    const grid = [6, 6];
    const a = tf.randomNormal([2, ...grid, 3], 0, 1, 'float32', 8);
    const b = tf.randomNormal([2, ...grid, 3], 0, 1, 'float32', 9);
    const w = tf.variable(tf.randomNormal([6, 2], 0, 0.5, 'float32', 10));
    const optimizer = tf.train.adam(1e-2);
    const step = () =>
      optimizer.minimize(() => {
        const { forward, inverse } = symmetricUpdate(makeNet(w, [12, 12]), a, b);
        return tf.add(tf.mean(tf.square(forward)), tf.mean(tf.square(inverse))) as tf.Scalar;
      }, true);
    step()!.dispose();
    const before = tf.memory().numTensors;
    for (let i = 0; i < 20; i++) step()!.dispose();
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([a, b, w]);
    optimizer.dispose();
  });

  it('errors name the argument and the shape', () => {
    const a = tf.zeros([1, 4, 4, 2]);
    const net = makeNet(tf.zeros([4, 2]), [8, 8]);
    expect(() => symmetricUpdate(3 as unknown as typeof net, a, a)).toThrow(
      /symmetricUpdate\(\): 'net' must be a function, got number/,
    );
    expect(() => symmetricUpdate(net, a, tf.zeros([1, 4, 5, 2]))).toThrow(
      /'featuresA' \[1, 4, 4, 2\] and 'featuresB' \[1, 4, 5, 2\] must have the same shape/,
    );
    expect(() => symmetricUpdate(() => tf.zeros([1, 4, 4, 3]), a, a)).toThrow(
      /symmetricUpdate\(\): 'net\(a, b\)' must be a displacement field .* got shape \[1, 4, 4, 3\]/,
    );
    expect(() => symmetricUpdate(net, a, a, { tolerance: -1 })).toThrow(/'tolerance'/);
    a.dispose();
  });
});

describe.each(BACKENDS)('SVF alternatives on %s', (backend) => {
  beforeAll(() => useBackend(backend));

  it('exp(−v) = integrateVelocity(invertVelocity(v)) inverts exp(v) like invertField does', () => {
    for (const shape of [
      [40, 36],
      [16, 18, 14],
    ]) {
      tf.tidy(() => {
        const v = randomSmoothField(shape, {
          maxDisplacement: 3,
          controlSpacing: 8,
          seed: 4,
          batch: 2,
        });
        const phi = integrateVelocity(v);
        expect(maxAbs(tf.add(invertVelocity(v), v))).toBe(0);
        const inv = integrateVelocity(invertVelocity(v));
        // both are inverses of exp(v) up to sampling: compare them inside the image
        const dil = invertField(phi, { tolerance: 1e-3 });
        expect(tf.mean(tf.abs(cropped(tf.sub(inv, dil), 5))).dataSync()[0]).toBeLessThan(0.02);
        expect(tf.mean(tf.abs(cropped(composeFields(phi, inv), 5))).dataSync()[0]).toBeLessThan(
          0.02,
        );
        expect(maxAbs(composeFields(phi, dil))).toBeLessThan(1e-3);
      });
    }
  });

  it('errors', () => {
    expect(() => invertVelocity(tf.zeros([1, 4, 4, 3]))).toThrow(
      /invertVelocity\(\): 'velocity' must be a displacement field .* got shape \[1, 4, 4, 3\]/,
    );
  });
});
