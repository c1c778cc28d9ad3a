/** Gradients against central finite differences along random directions. */

import {
  affineField,
  composeFields,
  cubicBSplineField,
  gaussianSmooth,
  integrateVelocity,
  jacobianDeterminant,
  randomSmoothField,
  resizeField,
  resizeLinear,
  spatialGradient,
  tf,
  warp,
} from '@regkit/core';
import { beforeAll, describe, expect, it } from 'vitest';
import { BACKEND_PATHS, checkGradient, uniform, useBackend } from './helpers.js';

/** A fixed random weighting so the checked scalar depends on every output voxel. */
function weighted(out: tf.Tensor, seed: number): tf.Scalar {
  return tf.sum(tf.mul(out, uniform(out.shape, -1, 1, seed)));
}

describe.each(BACKEND_PATHS)('finite-difference gradients on %s (%s ops)', (backend, path) => {
  beforeAll(() => useBackend(backend, path));

  it.each([
    ['linear', 'zeros', [8, 7]],
    ['linear', 'border', [8, 7]],
    ['linear', 'zeros', [5, 6, 4]],
    ['linear', 'border', [5, 6, 4]],
  ] as const)('warp %s %s %j w.r.t. image and field', (interpolation, padding, spatial) => {
    tf.tidy(() => {
      const image = gaussianSmooth(uniform([2, ...spatial, 2], 0, 1, 1), 1);
      const field = randomSmoothField(spatial, {
        maxDisplacement: 2.5,
        controlSpacing: 3,
        seed: 2,
        batch: 2,
      });
      // a small step keeps the probes inside one interpolation cell almost everywhere
      checkGradient((a, b) => weighted(warp(a, b, { interpolation, padding }), 3), [image, field], {
        eps: 1e-3,
        rtol: 3e-2,
        atol: 5e-3,
      });
    });
  });

  it.each([[[9, 8]], [[5, 6, 5]]])('composeFields %j', (spatial) => {
    tf.tidy(() => {
      const a = randomSmoothField(spatial, { maxDisplacement: 1.5, controlSpacing: 3, seed: 4 });
      const b = randomSmoothField(spatial, { maxDisplacement: 1.5, controlSpacing: 3, seed: 5 });
      checkGradient((x, y) => weighted(composeFields(x, y), 6), [a, b], {
        eps: 1e-3,
        rtol: 3e-2,
        atol: 5e-3,
      });
    });
  });

  it.each([[[10, 9]], [[6, 7, 5]]])('integrateVelocity %j', (spatial) => {
    tf.tidy(() => {
      const v = randomSmoothField(spatial, { maxDisplacement: 2, controlSpacing: 4, seed: 8 });
      checkGradient((x) => weighted(integrateVelocity(x, { steps: 5 }), 9), [v], {
        eps: 1e-3,
        rtol: 3e-2,
        atol: 5e-3,
      });
    });
  });

  it.each([[[7, 6]], [[5, 6, 5]]])('cubicBSplineField %j', (grid) => {
    tf.tidy(() => {
      const cp = uniform([1, ...grid, grid.length], -2, 2, 10);
      const shape = grid.map((g) => 2 * g + 1);
      checkGradient((x) => weighted(cubicBSplineField(x, shape), 11), [cp]);
    });
  });

  it('warp nearest w.r.t. the image (the field gradient is zero)', () => {
    tf.tidy(() => {
      const image = uniform([1, 7, 6, 5, 2], -1, 1, 18);
      const field = randomSmoothField([7, 6, 5], {
        maxDisplacement: 2.5,
        controlSpacing: 3,
        seed: 19,
      });
      const f = (a: tf.Tensor) => weighted(warp(a, field, { interpolation: 'nearest' }), 20);
      checkGradient(f, [image]);
      const dField = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
        weighted(warp(a, b, { interpolation: 'nearest' }), 20),
      )([image, field])[1]!;
      expect(tf.max(tf.abs(dField)).dataSync()[0]).toBe(0);
    });
  });

  it.each([[[7, 8]], [[5, 6, 4]]])('spatialGradient and jacobianDeterminant %j', (spatial) => {
    tf.tidy(() => {
      const u = randomSmoothField(spatial, {
        maxDisplacement: 2,
        controlSpacing: 3,
        seed: 21,
        batch: 2,
      });
      checkGradient((x) => weighted(spatialGradient(x), 22), [u]);
      checkGradient((x) => weighted(jacobianDeterminant(x), 23), [u]);
    });
  });

  it('gaussianSmooth, resizeField, resizeLinear and affineField', () => {
    tf.tidy(() => {
      checkGradient(
        (x) => weighted(gaussianSmooth(x, [1.2, 0.8]), 12),
        [uniform([1, 9, 8, 2], -1, 1, 13)],
      );
      // an axis over 96 voxels: the padded-convolution path; 3D with a wide kernel
      checkGradient(
        (x) => weighted(gaussianSmooth(x, [1.5, 0.7]), 18),
        [uniform([1, 100, 3, 1], -1, 1, 19)],
      );
      checkGradient(
        (x) => weighted(gaussianSmooth(x, [1, 2.5, 0.5]), 24),
        [uniform([1, 5, 4, 6, 2], -1, 1, 25)],
      );
      checkGradient(
        (x) => weighted(resizeField(x, [7, 9, 5]), 14),
        [uniform([1, 4, 5, 3, 3], -1, 1, 15)],
      );
      checkGradient(
        (x) => weighted(resizeField(x, [6, 8, 4]), 26),
        [uniform([1, 4, 5, 3, 3], -1, 1, 27)],
      );
      // resizeLinear: batch of 2, one axis shrinking, one of size 1 growing
      checkGradient(
        (x) => weighted(resizeLinear(x, [3, 6, 2]), 28),
        [uniform([2, 1, 4, 5, 2], -1, 1, 29)],
      );
      const m = tf.add(
        tf.tensor3d([
          [
            [1, 0, 0],
            [0, 1, 0],
          ],
        ]),
        uniform([1, 2, 3], -0.1, 0.1, 16),
      );
      checkGradient((x) => weighted(affineField(x, [6, 5]), 17), [m]);
    });
  });
});
