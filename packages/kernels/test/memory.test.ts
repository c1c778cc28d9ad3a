/**
 * 1000 forward + backward calls (warp, resizeLinear, localNccLoss) leak no tensors, and the kernels' memory
 * stays bounded.
 */
import { randomSmoothField, resizeLinear, tf, warp } from '@regkit/core';
import { kernelMemoryBytes } from '@regkit/kernels';
import { localNccLoss } from '@regkit/losses';
import { beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS, MODES, useKernels } from './helpers.js';

describe.each(BACKENDS)('memory on %s', (backend) => {
  beforeAll(() => useKernels(backend));

  it('1000 forward + backward calls keep numTensors flat and the wasm memory bounded', () => {
    const image = tf.randomUniform([2, 9, 10, 11, 2], 0, 1, 'float32', 1);
    const field = randomSmoothField([9, 10, 11], {
      maxDisplacement: 3,
      controlSpacing: 4,
      batch: 2,
    });
    const dy = tf.randomUniform([2, 9, 10, 11, 2], -1, 1, 'float32', 2);
    const loss = (a: tf.Tensor, b: tf.Tensor, i: number) =>
      tf.sum(tf.mul(warp(a, b, MODES[i % MODES.length]), dy));
    const resized = (a: tf.Tensor) => tf.sum(tf.mul(resizeLinear(a, [17, 5, 21]), 0.5));
    const step = (i: number) => {
      const [dI, dU] = tf.grads((a: tf.Tensor, b: tf.Tensor) => loss(a, b, i))([image, field]);
      tf.dispose([dI!, dU!]);
      warp(image, field, MODES[i % MODES.length]).dispose();
      tf.grad(resized)(image).dispose();
      const [da, db] = tf.grads((a: tf.Tensor, b: tf.Tensor) => localNccLoss(a, b, { window: 5 }))([
        image,
        dy,
      ]);
      tf.dispose([da!, db!]);
    };
    for (let i = 0; i < 4; i++) step(i); // warm-up: every mode once
    const tensors = tf.memory().numTensors;
    const bytes = kernelMemoryBytes();
    expect(bytes).toBeGreaterThan(0);
    for (let i = 0; i < 1000; i++) step(i);
    expect(tf.memory().numTensors).toBe(tensors);
    expect(kernelMemoryBytes()).toBe(bytes);
    tf.dispose([image, field, dy]);
  });

  it('grows for a larger call, then stays at that size', () => {
    const big = tf.zeros([1, 40, 41, 42, 1]);
    const u = tf.zeros([1, 40, 41, 42, 3]);
    warp(big, u).dispose();
    const bytes = kernelMemoryBytes();
    expect(bytes).toBeGreaterThanOrEqual(40 * 41 * 42 * 4 * 5);
    for (let i = 0; i < 20; i++) warp(big, u).dispose();
    expect(kernelMemoryBytes()).toBe(bytes);
    tf.dispose([big, u]);
  });
});
