/** vjp: dyᵀ ∂f/∂xs, also inside a customGrad backward pass, without breaking the outer tape. */

import { initBackend, tf, vjp } from '@regkit/core';
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
