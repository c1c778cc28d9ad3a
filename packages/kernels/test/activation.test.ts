/**
 * The WebAssembly LeakyReLU (`LeakyRelu`, replacing tfjs's) and its gradient
 * (`RegkitLeakyReluGrad`, run by core's LeakyRelu gradient): bit-identical to the closed form
 * in float32 (x > 0 ? x : fround(alpha)·x, and dy alike) and to tfjs's own gradient ops
 * (select(x > 0, dy, alpha·dy)), at 1, 2 and 3 threads, on sizes that are not multiples of
 * the SIMD width; other dtypes run the kernel registered before; memory flat over 1000 calls.
 */
import { RegkitLeakyReluGrad, tf } from '@regkit/core';
import { setKernelThreads } from '@regkit/kernels';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS, expectMemoryFlat, expectSameBits, useKernels } from './helpers.js';

/** Values with exact zeros, ±0, tiny and large magnitudes and both signs. */
function values(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const u = s / 2 ** 32 - 0.5;
    a[i] = i % 17 === 0 ? 0 : i % 29 === 0 ? -0 : u * 10 ** ((i % 7) - 3);
  }
  return a;
}

describe.each(BACKENDS)('LeakyRelu and its gradient on %s', (backend) => {
  beforeAll(async () => {
    await useKernels(backend);
  });
  afterAll(async () => {
    await setKernelThreads(1);
  });

  it.each([
    [[1, 37, 41, 3], 0.2],
    [[2, 9, 10, 11, 16], 0.01],
    [[1, 64, 64, 32], 0.2],
  ] as const)(
    'shape [%s], alpha %s: the closed form and tfjs ops, at 1, 2 and 3 threads',
    async (shape, alpha) => {
      const n = (shape as readonly number[]).reduce((p, q) => p * q, 1);
      const xv = values(n, 3);
      const gv = values(n, 7);
      const a = Math.fround(alpha);
      const yRef = xv.map((v) => (v > 0 ? v : Math.fround(a * v)));
      const dxRef = gv.map((g, i) => (xv[i]! > 0 ? g : Math.fround(a * g)));
      const x = tf.tensor(xv, [...shape]);
      const dy = tf.tensor(gv, [...shape]);
      // tfjs's gradient ops, as tfjs-core's LeakyRelu_grad
      const stock = tf.tidy(() => tf.where(tf.greater(x, 0), dy, tf.mul(dy, alpha)).dataSync());
      expectSameBits(stock, dxRef, 'stock ops vs closed form');
      for (const threads of [1, 2, 3]) {
        await setKernelThreads(threads);
        const [y, dx] = tf.tidy(() => [
          tf.leakyRelu(x, alpha).dataSync(),
          tf
            .grad((t: tf.Tensor) => tf.leakyRelu(t, alpha))(x, dy)
            .dataSync(),
        ]);
        expectSameBits(y!, yRef, `forward, ${threads} threads`);
        expectSameBits(dx!, dxRef, `gradient, ${threads} threads`);
      }
      tf.dispose([x, dy]);
    },
  );

  it('runs RegkitLeakyReluGrad for the gradient, and no greater/select', async () => {
    const x = tf.randomUniform([1, 8, 8, 4], -1, 1, 'float32', 1);
    const info = await tf.profile(() => tf.grad((t: tf.Tensor) => tf.leakyRelu(t, 0.2))(x));
    const names = info.kernels.map((k) => k.name);
    expect(names).toContain(RegkitLeakyReluGrad);
    expect(names).not.toContain('Greater');
    expect(names).not.toContain('Select');
    tf.dispose([x, info.result as tf.Tensor]);
  });

  it('hands int32 inputs to the kernel registered before', () => {
    const y = tf.leakyRelu(tf.tensor1d([-3, 0, 5], 'int32'), 0.5);
    expect(Array.from(y.dataSync())).toEqual([-1.5, 0, 5]);
    y.dispose();
  });

  it('1000 forward + backward calls at 2 threads keep numTensors and the kernels memory flat', async () => {
    await setKernelThreads(2);
    const x = tf.randomUniform([1, 40, 40, 40, 2], -1, 1, 'float32', 1);
    const step = () => tf.dispose(tf.grad((t: tf.Tensor) => tf.leakyRelu(t, 0.2))(x));
    expectMemoryFlat(step);
    x.dispose();
  }, 300_000);
});
