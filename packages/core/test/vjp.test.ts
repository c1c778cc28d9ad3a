/** vjp: dyᵀ ∂f/∂xs, also inside a customGrad backward pass, without breaking the outer tape. */

import {
  gaussianSmooth,
  initBackend,
  PORTABLE_OPS_FLAG,
  resizeField,
  resizeFieldVjp,
  tf,
  vjp,
} from '@regkit/core';
import { describe, expect, it } from 'vitest';

await initBackend('cpu');

const maxAbsDiff = (a: tf.Tensor, b: tf.Tensor) =>
  tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);

describe('vjp', () => {
  const f = (x: tf.Tensor, w: tf.Tensor) => tf.mul(tf.sin(x), w);

  it('equals tf.grads and leaks nothing but its results', () => {
    const x = tf.tensor([0.1, 0.5, -1.2]);
    const w = tf.tensor([2, -1, 0.5]);
    const dy = tf.tensor([1, 3, -2]);
    const before = tf.memory().numTensors;
    const [gx, gw] = vjp(f, [x, w], dy);
    expect(tf.memory().numTensors).toBe(before + 2);
    const [ex, ew] = tf.grads(f)([x, w], dy);
    expect(gx!.shape).toEqual([3]);
    expect(maxAbsDiff(gx!, ex!)).toBe(0);
    expect(maxAbsDiff(gw!, ew!)).toBe(0);
    tf.dispose([x, w, dy, gx!, gw!, ex!, ew!]);
  });

  it('runs inside a customGrad gradient without clearing the outer tape', () => {
    // g(x) = sum(sin(1.5 x) · w) through a customGrad whose gradient is a vjp; the outer
    // tf.grads differentiates through a plain op (x · 1.5) after the customGrad one.
    const w = tf.tensor([2, -1, 0.5]);
    const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
      const x = args[0] as tf.Tensor;
      const save = args[args.length - 1] as tf.GradSaveFunc;
      save([x]);
      return {
        value: f(x, w),
        gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
          vjp((t: tf.Tensor) => f(t, w), [saved[0]!], dy),
      };
    });
    const x = tf.tensor([0.1, 0.5, -1.2]);
    const loss = (t: tf.Tensor) => tf.sum(op(tf.mul(t, 1.5)) as tf.Tensor);
    const before = tf.memory().numTensors;
    const g = tf.grad(loss)(x);
    expect(tf.memory().numTensors).toBe(before + 1);
    const expected = tf.tidy(() => tf.mul(tf.mul(tf.cos(tf.mul(x, 1.5)), w), 1.5));
    expect(maxAbsDiff(g, expected)).toBeLessThan(1e-6);
    tf.dispose([w, x, g, expected]);
  });
});

describe('vector–Jacobian products of the linear maps resizeField and gaussianSmooth', () => {
  const cases: Array<[string, number[], number[]]> = [
    ['2D up', [7, 9], [13, 17]],
    ['2D down', [12, 10], [5, 6]],
    ['3D up, one axis unchanged', [5, 6, 4], [9, 6, 7]],
  ];
  for (const portable of [false, true]) {
    const label = portable ? 'portable ops' : 'the RegkitResizeLinearGrad kernel';
    it.each(cases)(`resizeFieldVjp equals tf.grads, %s, with ${label}`, (_name, from, to) => {
      tf.env().set(PORTABLE_OPS_FLAG, portable);
      try {
        const nd = from.length;
        const field = tf.randomNormal([2, ...from, nd], 0, 1, 'float32', 1);
        const dy = tf.randomNormal([2, ...to, nd], 0, 1, 'float32', 2);
        const before = tf.memory().numTensors;
        const g = resizeFieldVjp(field, to, dy);
        expect(tf.memory().numTensors).toBe(before + 1);
        const [expected] = tf.grads((x: tf.Tensor) => resizeField(x, to))([field], dy);
        expect(g.shape).toEqual(field.shape);
        expect(maxAbsDiff(g, expected!)).toBeLessThan(1e-5);
        tf.dispose([field, dy, g, expected!]);
      } finally {
        tf.env().set(PORTABLE_OPS_FLAG, false);
      }
    });
  }

  it.each([
    ['2D dense (short axes), σ per axis', [20, 31], [1.2, 0.7]],
    ['3D dense, an axis not smoothed', [9, 12, 10], [1, 0, 2]],
    ['2D padded convolution (an axis over 96)', [100, 11], [1.5, 1]],
    ['3D padded convolution, σ 3 (reflections of reflections)', [98, 5, 6], [3, 3, 3]],
  ] as Array<[string, number[], number[]]>)(
    'gaussianSmooth is self-adjoint (its vjp is itself), %s',
    (_n, s, sigma) => {
      const x = tf.randomNormal([2, ...s, 3], 0, 1, 'float32', 3);
      const dy = tf.randomNormal([2, ...s, 3], 0, 1, 'float32', 4);
      const [expected] = tf.grads((t: tf.Tensor) => gaussianSmooth(t, sigma))([x], dy);
      const g = gaussianSmooth(dy, sigma);
      expect(maxAbsDiff(g, expected!)).toBeLessThan(1e-5);
      tf.dispose([x, dy, g, expected!]);
    },
  );

  it('resizeFieldVjp checks its arguments', () => {
    const field = tf.zeros([1, 4, 5, 2]);
    expect(() => resizeFieldVjp(field, [6, 7], tf.zeros([1, 6, 8, 2]))).toThrow(
      /resizeFieldVjp\(\).*'dy' \[1, 6, 8, 2\] must have the shape \[1, 6, 7, 2\]/,
    );
  });
});
