/** Bad input fails at the door with the function, the argument and the shape or value. */

import {
  affineField,
  assertNdim,
  Conv,
  composeFields,
  cubicBSplineField,
  gaussianSmooth,
  identityGrid,
  initBackend,
  integrateVelocity,
  jacobianDeterminant,
  RegkitError,
  randomSmoothField,
  resizeField,
  spatialGradient,
  tf,
  warp,
} from '@regkit/core';
import { describe, expect, it } from 'vitest';

await initBackend('cpu');

describe('input validation', () => {
  const img = tf.zeros([1, 8, 8, 1]);
  const u2 = tf.zeros([1, 8, 8, 2]);
  const u3 = tf.zeros([1, 4, 4, 4, 3]);

  it.each([
    [() => warp(tf.zeros([8, 8]), u2), /warp\(\): 'image' must be an image .* got shape \[8, 8\]/],
    [
      () => warp(img, tf.zeros([1, 8, 8, 3])),
      /warp\(\): 'field' must be a displacement field .* got shape \[1, 8, 8, 3\]/,
    ],
    [
      () => warp(img, u3),
      /warp\(\): 'image' \[1, 8, 8, 1\] is 2D but 'field' \[1, 4, 4, 4, 3\] is 3D/,
    ],
    [() => warp(tf.zeros([2, 8, 8, 1]), u2), /warp\(\): batch sizes differ/],
    [
      () => warp(img, u2, { padding: 'reflect' as 'zeros' }),
      /warp\(\): 'padding' must be one of 'zeros', 'border', got "reflect"/,
    ],
    [
      () => warp(img, u2, { interpolation: 'cubic' as 'linear' }),
      /'interpolation' must be one of 'linear', 'nearest'/,
    ],
    [() => warp([1, 2] as unknown as tf.Tensor, u2), /'image' must be a tf.Tensor, got object/],
    [
      () => composeFields(u2, tf.zeros([1, 8, 7, 2])),
      /composeFields\(\): 'outer' \[1, 8, 8, 2\] and 'inner' \[1, 8, 7, 2\] must have the same shape/,
    ],
    [
      () => integrateVelocity(u2, { steps: -1 }),
      /integrateVelocity\(\): 'steps' must be an integer in \[0, 30\], got -1/,
    ],
    [
      () => jacobianDeterminant(img),
      /jacobianDeterminant\(\): 'field' must be a displacement field/,
    ],
    [
      () => spatialGradient(tf.zeros([1, 1, 8, 2])),
      /spatialGradient\(\): every spatial size of 'x' must be at least 2/,
    ],
    [
      () => identityGrid([0, 4]),
      /identityGrid\(\): 'spatialShape' must be a spatial shape of 2 or 3 positive integers, got \[0,4\]/,
    ],
    [
      () => affineField(tf.zeros([1, 2, 2]), [4, 4]),
      /affineField\(\): 'matrix' must be \[B, 2, 3\] for 2D spatial shape, got \[1, 2, 2\]/,
    ],
    [
      () => resizeField(u2, [4, 4, 4]),
      /resizeField\(\): 'spatialShape' \[4,4,4\] must have 2 entries/,
    ],
    [
      () => gaussianSmooth(img, [1, 2, 3]),
      /gaussianSmooth\(\): 'sigma' must be a finite number or 2 finite numbers, got \[1,2,3\]/,
    ],
    [() => gaussianSmooth(img, -1), /gaussianSmooth\(\): 'sigma' must be ≥ 0/],
    [
      () => cubicBSplineField(tf.zeros([1, 3, 3, 2]), [9, 9]),
      /cubicBSplineField\(\): the default spacing needs at least 4 control points per axis, got grid \[3, 3\]/,
    ],
    [
      () => cubicBSplineField(tf.zeros([1, 5, 5, 2]), [9, 9, 9]),
      /'controlPoints' must be \[B, ...G, C\] with 3 grid axes, got \[1, 5, 5, 2\]/,
    ],
    [() => new Conv(4 as 2, 1, 1), /Conv\(\): 'ndim' must be 2 or 3, got 4/],
    [
      () => randomSmoothField([8, 8], { controlSpacing: 0 }),
      /randomSmoothField\(\): 'controlSpacing' must be > 0/,
    ],
  ])('%#: %s', (fn, message) => {
    expect(fn).toThrow(RegkitError);
    expect(fn).toThrow(message);
  });

  it.each([4, 1, '2', undefined])('assertNdim rejects %j', (ndim) => {
    const fn = () => assertNdim('f', ndim);
    expect(fn).toThrow(RegkitError);
    expect(fn).toThrow(`f(): 'ndim' must be 2 or 3, got ${JSON.stringify(ndim)}`);
  });

  it('assertNdim returns 2 and 3', () => {
    expect(assertNdim('f', 2)).toBe(2);
    expect(assertNdim('f', 3)).toBe(3);
  });

  it('rejects disposed tensors', () => {
    const t = tf.zeros([1, 4, 4, 1]);
    t.dispose();
    expect(() => warp(t, tf.zeros([1, 4, 4, 2]))).toThrow(/'image' has been disposed/);
  });
});
