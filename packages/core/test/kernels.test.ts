/** Registered kernels (core's JavaScript warp) against the portable composites of the same ops. */
import {
  hasKernels,
  PORTABLE_OPS_FLAG,
  RegkitWarp,
  RegkitWarpFieldGrad,
  RegkitWarpGrad,
  RegkitWarpImageGrad,
  randomSmoothField,
  tf,
  warp,
} from '@regkit/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS, uniform, useBackend } from './helpers.js';

function both<T>(fn: () => T): [T, T] {
  tf.env().set(PORTABLE_OPS_FLAG, false);
  const kernel = fn();
  tf.env().set(PORTABLE_OPS_FLAG, true);
  const portable = fn();
  tf.env().set(PORTABLE_OPS_FLAG, false);
  return [kernel, portable];
}

function maxDiff(a: tf.Tensor, b: tf.Tensor): number {
  expect(a.shape).toEqual(b.shape);
  return tf.tidy(() => tf.max(tf.abs(tf.sub(a, b)))).dataSync()[0]!;
}

describe.each(BACKENDS)('warp kernel vs portable composite on %s', (backend) => {
  beforeAll(() => useBackend(backend));
  afterAll(() => tf.env().set(PORTABLE_OPS_FLAG, false));

  it('the kernel is registered and used unless portable ops are forced', () => {
    expect(hasKernels(RegkitWarp, RegkitWarpGrad)).toBe(true);
    tf.env().set(PORTABLE_OPS_FLAG, true);
    expect(hasKernels(RegkitWarp, RegkitWarpGrad)).toBe(false);
    tf.env().set(PORTABLE_OPS_FLAG, false);
  });

  it('runs the gradient kernels the differentiated inputs need: one combined, or one alone', async () => {
    const image = uniform([1, 9, 8, 7, 1], 0, 1, 1);
    const field = randomSmoothField([9, 8, 7], { maxDisplacement: 2, controlSpacing: 4, seed: 3 });
    const dy = uniform([1, 9, 8, 7, 1], -1, 1, 2);
    const loss = (a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(warp(a, b), dy));
    const kernelsOf = async (f: () => tf.TensorContainer) => {
      const info = await tf.profile(() => {
        const r = f();
        return r as tf.Tensor;
      });
      return info.kernelNames.filter((k) => k.startsWith('RegkitWarp') && k !== RegkitWarp);
    };
    // a fixed image (registration, training on data): the field's gradient alone
    expect(await kernelsOf(() => tf.grad((b: tf.Tensor) => loss(image, b))(field))).toEqual([
      RegkitWarpFieldGrad,
    ]);
    // a fixed field: the image's alone
    expect(await kernelsOf(() => tf.grad((a: tf.Tensor) => loss(a, field))(image))).toEqual([
      RegkitWarpImageGrad,
    ]);
    // both differentiated, directly or through other ops: one combined kernel
    expect(await kernelsOf(() => tf.grads(loss)([image, field]))).toEqual([RegkitWarpGrad]);
    expect(
      await kernelsOf(() =>
        tf.grads((a: tf.Tensor, b: tf.Tensor) => loss(tf.mul(a, 2), tf.add(b, 0.5)))([
          image,
          field,
        ]),
      ),
    ).toEqual([RegkitWarpGrad]);
    // an image computed from constants only (not from the xs): the field's alone
    expect(
      await kernelsOf(() => tf.grad((b: tf.Tensor) => loss(tf.mul(image, 3), b))(field)),
    ).toEqual([RegkitWarpFieldGrad]);
    tf.dispose([image, field, dy]);
  });

  it.each([
    ['linear', 'zeros'],
    ['linear', 'border'],
    ['nearest', 'zeros'],
    ['nearest', 'border'],
  ] as const)(
    '%s %s: outputs and gradients agree in 2D and 3D, with differing grids',
    (interpolation, padding) => {
      tf.tidy(() => {
        for (const [imageSpatial, fieldSpatial] of [
          [
            [23, 19],
            [23, 19],
          ],
          [
            [11, 13, 9],
            [11, 13, 9],
          ],
          [
            [12, 10, 8],
            [7, 9, 11],
          ],
        ]) {
          const image = uniform([2, ...imageSpatial!, 3], -1, 1, 1);
          const field = tf.add(
            randomSmoothField(fieldSpatial!, {
              maxDisplacement: 4,
              controlSpacing: 4,
              seed: 2,
              batch: 2,
            }),
            0.01, // away from exact integers, where linear weights have kinks
          );
          const dy = uniform([2, ...fieldSpatial!, 3], -1, 1, 3);
          const run = () => {
            const out = warp(image, field, { interpolation, padding });
            const [dI, dU] = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
              tf.sum(tf.mul(warp(a, b, { interpolation, padding }), dy)),
            )([image, field]);
            return [out, dI!, dU!];
          };
          const [k, p] = both(run);
          for (let i = 0; i < 3; i++)
            expect(maxDiff(k[i]!, p[i]!), `output ${i}`).toBeLessThan(1e-4);
        }
      });
    },
  );
});
