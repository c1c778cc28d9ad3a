/** Defining identities on analytic and smooth random fields (deepali-style). */

import {
  affineField,
  composeFields,
  cubicBSplineField,
  gaussianSmooth,
  identityGrid,
  integrateVelocity,
  jacobianDeterminant,
  randomSmoothField,
  resizeField,
  tf,
  warp,
} from '@regkit/core';
import { beforeAll, describe, expect, it } from 'vitest';
import { BACKEND_PATHS, expectClose, uniform, useBackend } from './helpers.js';

function maxAbs(t: tf.Tensor): number {
  return tf.tidy(() => tf.max(tf.abs(t))).dataSync()[0]!;
}

/** Max |a − b| over the voxels at least `margin` voxels from every border. */
function interiorMaxDiff(a: tf.Tensor, b: tf.Tensor, margin: number): number {
  return tf
    .tidy(() => {
      const nd = a.rank - 2;
      const begin = [0, ...new Array<number>(nd).fill(margin), 0];
      const size = a.shape.map((s, i) => (i === 0 || i === a.rank - 1 ? -1 : s - 2 * margin));
      return tf.max(tf.abs(tf.sub(tf.slice(a, begin, size), tf.slice(b, begin, size))));
    })
    .dataSync()[0]!;
}

describe.each(BACKEND_PATHS)('properties on %s (%s ops)', (backend, path) => {
  beforeAll(() => useBackend(backend, path));

  it.each([[[24, 20]], [[12, 14, 10]]])(
    'warp(warp(m, a), b) ≈ warp(m, composeFields(a, b)) on smooth fields %j',
    (spatial) => {
      tf.tidy(() => {
        const image = gaussianSmooth(uniform([1, ...spatial, 1], 0, 1, 3), 2);
        const a = randomSmoothField(spatial, { maxDisplacement: 1.5, controlSpacing: 6, seed: 1 });
        const b = randomSmoothField(spatial, { maxDisplacement: 1.5, controlSpacing: 6, seed: 2 });
        const twice = warp(warp(image, a, { padding: 'border' }), b, { padding: 'border' });
        const once = warp(image, composeFields(a, b), { padding: 'border' });
        // equal up to the interpolation error of re-sampling a smooth image
        expect(interiorMaxDiff(twice, once, 3)).toBeLessThan(0.01);
        expect(maxAbs(tf.sub(twice, once))).toBeGreaterThan(0); // not trivially identical
      });
    },
  );

  it.each([[[32, 28]], [[14, 16, 12]]])('composeFields(exp(v), exp(−v)) ≈ 0 %j', (spatial) => {
    tf.tidy(() => {
      const v = randomSmoothField(spatial, { maxDisplacement: 2, controlSpacing: 8, seed: 5 });
      const fwd = integrateVelocity(v);
      const inv = integrateVelocity(tf.neg(v));
      expect(maxAbs(fwd)).toBeGreaterThan(0.5);
      expect(interiorMaxDiff(composeFields(fwd, inv), tf.zerosLike(fwd), 3)).toBeLessThan(0.05);
      expect(interiorMaxDiff(composeFields(inv, fwd), tf.zerosLike(fwd), 3)).toBeLessThan(0.05);
    });
  });

  it('identity fields are no-ops', () => {
    tf.tidy(() => {
      for (const spatial of [
        [9, 7],
        [5, 6, 4],
      ]) {
        const image = uniform([2, ...spatial, 3], -1, 1, 11);
        const zero = tf.zeros([2, ...spatial, spatial.length]);
        for (const padding of ['zeros', 'border'] as const) {
          for (const interpolation of ['linear', 'nearest'] as const) {
            expect(maxAbs(tf.sub(warp(image, zero, { padding, interpolation }), image))).toBe(0);
          }
        }
        const u = randomSmoothField(spatial, {
          maxDisplacement: 2,
          controlSpacing: 4,
          seed: 3,
          batch: 2,
        });
        expect(maxAbs(tf.sub(composeFields(u, zero), u))).toBeLessThan(1e-6);
        expect(maxAbs(tf.sub(composeFields(zero, u), u))).toBe(0);
        expect(maxAbs(integrateVelocity(zero))).toBe(0);
        expect(maxAbs(tf.sub(jacobianDeterminant(zero), 1))).toBe(0);
        expect(maxAbs(tf.sub(resizeField(u, spatial), u))).toBeLessThan(1e-5);
      }
    });
  });

  it('integer shifts move content along the named axis', () => {
    tf.tidy(() => {
      const image = tf.tensor4d([1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 3, 3, 1]);
      // component 0 = +1 along axis 0 (rows): out[i, j] = m[i + 1, j]
      const shift = tf.tile(tf.tensor4d([1, 0], [1, 1, 1, 2]), [1, 3, 3, 1]);
      expectClose(warp(image, shift), [4, 5, 6, 7, 8, 9, 0, 0, 0], 0);
      expectClose(warp(image, shift, { padding: 'border' }), [4, 5, 6, 7, 8, 9, 7, 8, 9], 0);
    });
  });

  it('nearest warping keeps label values exact', () => {
    tf.tidy(() => {
      const labels = tf.floor(uniform([1, 12, 10, 8, 1], 0, 6, 21));
      const u = randomSmoothField([12, 10, 8], {
        maxDisplacement: 3.3,
        controlSpacing: 4,
        seed: 9,
      });
      const out = warp(labels, u, { interpolation: 'nearest', padding: 'border' }).dataSync();
      const allowed = new Set(labels.dataSync());
      let moved = 0;
      const src = labels.dataSync();
      out.forEach((v, i) => {
        expect(allowed.has(v)).toBe(true);
        if (v !== src[i]) moved++;
      });
      expect(moved).toBeGreaterThan(0);
    });
  });

  it('affineField: identity is zero, a translation is constant, a known rotation about the centre', () => {
    tf.tidy(() => {
      expect(
        maxAbs(
          affineField(
            [
              [
                [1, 0, 0],
                [0, 1, 0],
              ],
            ],
            [5, 7],
          ),
        ),
      ).toBe(0);
      const t = affineField(
        [
          [
            [1, 0, 0, 2],
            [0, 1, 0, -1],
            [0, 0, 1, 0.5],
          ],
        ],
        [3, 4, 5],
      );
      expectClose(
        tf.reshape(tf.slice(t, [0, 2, 3, 4, 0], [1, 1, 1, 1, 3]), [3]),
        [2, -1, 0.5],
        1e-6,
      );
      // 90° rotation in 2D on a 5x5 grid, centre (2, 2): y = R (x − c) + c, R = [[0, −1], [1, 0]]
      const r = affineField(
        [
          [
            [0, -1, 0],
            [1, 0, 0],
          ],
        ],
        [5, 5],
      );
      // x = (0, 0): y = R(−2, −2) + (2, 2) = (4, 0): u = (4, 0)
      expectClose(tf.reshape(tf.slice(r, [0, 0, 0, 0], [1, 1, 1, 2]), [2]), [4, 0], 1e-6);
    });
  });

  it('jacobianDeterminant of an affine field is det(A) everywhere', () => {
    tf.tidy(() => {
      const A = [
        [1.1, 0.2, -0.1],
        [0.05, 0.9, 0.1],
        [0, -0.2, 1.2],
      ];
      const det =
        A[0]![0]! * (A[1]![1]! * A[2]![2]! - A[1]![2]! * A[2]![1]!) -
        A[0]![1]! * (A[1]![0]! * A[2]![2]! - A[1]![2]! * A[2]![0]!) +
        A[0]![2]! * (A[1]![0]! * A[2]![1]! - A[1]![1]! * A[2]![0]!);
      const u = affineField([A.map((row, i) => [...row, i])], [6, 5, 7]);
      expect(maxAbs(tf.sub(jacobianDeterminant(u), det))).toBeLessThan(1e-5);
    });
  });

  it('cubic B-splines reproduce constant and linear control grids', () => {
    tf.tidy(() => {
      const g = [7, 6];
      const s = [25, 16];
      const spacing = s.map((v, k) => (v - 1) / (g[k]! - 3));
      // control point j sits at voxel (j − 1) * spacing; c_j = that position → u(x) = x
      const lin = tf.stack(
        [0, 1].map((k) => {
          const coords = tf.mul(tf.sub(tf.range(0, g[k]!), 1), spacing[k]!);
          const shape = g.map((v, j) => (j === k ? v : 1));
          return tf.broadcastTo(tf.reshape(coords, shape), g);
        }),
        -1,
      );
      const dense = cubicBSplineField(tf.expandDims(lin, 0), s);
      expect(maxAbs(tf.sub(dense, identityGrid(s)))).toBeLessThan(1e-4);
      const constant = cubicBSplineField(tf.fill([1, ...g, 2], 3.5), s);
      expect(maxAbs(tf.sub(constant, 3.5))).toBeLessThan(1e-5);
    });
  });

  it('randomSmoothField is seeded, bounded and smooth', () => {
    tf.tidy(() => {
      const a = randomSmoothField([20, 24, 18], { maxDisplacement: 3, controlSpacing: 6, seed: 4 });
      const b = randomSmoothField([20, 24, 18], { maxDisplacement: 3, controlSpacing: 6, seed: 4 });
      const c = randomSmoothField([20, 24, 18], { maxDisplacement: 3, controlSpacing: 6, seed: 5 });
      expect(maxAbs(tf.sub(a, b))).toBe(0);
      expect(maxAbs(tf.sub(a, c))).toBeGreaterThan(0.1);
      expect(maxAbs(a)).toBeLessThanOrEqual(3);
      expect(maxAbs(a)).toBeGreaterThan(1);
      expect(a.shape).toEqual([1, 20, 24, 18, 3]);
    });
  });

  it('resizeField keeps the deformation: up then down returns the field', () => {
    tf.tidy(() => {
      const u = affineField(
        [
          [
            [1.05, 0.1, 1],
            [-0.05, 0.95, -2],
          ],
        ],
        [9, 7],
      );
      const up = resizeField(u, [17, 13]);
      // an affine field stays the same affine map in the new voxel units: compare with a direct one
      const direct = affineField(
        [
          [
            [1.05, (0.1 * (16 / 8)) / (12 / 6), 2],
            [(-0.05 * (12 / 6)) / (16 / 8), 0.95, -4],
          ],
        ],
        [17, 13],
      );
      expect(maxAbs(tf.sub(up, direct))).toBeLessThan(1e-4);
      expect(maxAbs(tf.sub(resizeField(up, [9, 7]), u))).toBeLessThan(1e-4);
    });
  });
});
