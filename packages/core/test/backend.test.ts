/** Backend selection and the kernels regkit replaces on the stock cpu/wasm backends. */

import { initBackend, RegkitBackendError, tf } from '@regkit/core';
import { afterAll, describe, expect, it } from 'vitest';
import { checkGradient } from './helpers.js';

/** Runs `fn` on cpu and on wasm with the same inputs (as arrays) and returns both results. */
async function onBoth(fn: () => tf.Tensor[]): Promise<[Float32Array[], Float32Array[]]> {
  const run = async (b: 'cpu' | 'wasm') => {
    await initBackend(b);
    return tf.tidy(fn).map((t) => {
      const d = t.dataSync() as Float32Array;
      t.dispose();
      return d;
    });
  };
  return [await run('cpu'), await run('wasm')];
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe('initBackend', () => {
  afterAll(() => initBackend('wasm'));

  it('picks wasm when tfjs-node is not installed, and reports the choice', async () => {
    const hasNode = await import('@tensorflow/tfjs-node' as string).then(
      () => true,
      () => false,
    );
    const name = await initBackend();
    expect(name).toBe(hasNode ? 'tensorflow' : 'wasm');
    expect(tf.getBackend()).toBe(name);
  });

  it('honours an explicit preference and fails clearly when it cannot', async () => {
    expect(await initBackend('cpu')).toBe('cpu');
    expect(tf.getBackend()).toBe('cpu');
    expect(await initBackend('wasm')).toBe('wasm');
    await expect(initBackend('webgl' as 'cpu')).rejects.toThrow(
      /'preferred' must be 'tensorflow', 'wasm' or 'cpu'/,
    );
    const hasNode = await import('@tensorflow/tfjs-node' as string).then(
      () => true,
      () => false,
    );
    if (!hasNode) {
      await expect(initBackend('tensorflow')).rejects.toThrow(RegkitBackendError);
      await expect(initBackend('tensorflow')).rejects.toThrow(/tfjs-node/);
    }
  });

  it('takes the kernel module from the caller: initKernels then registerKernels, on every call', async () => {
    const calls: string[] = [];
    const kernels = {
      initKernels: async () => {
        calls.push('init');
      },
      registerKernels: () => {
        calls.push('register');
      },
    };
    expect(await initBackend('cpu', { kernels })).toBe('cpu');
    expect(await initBackend('wasm', { kernels })).toBe('wasm');
    expect(calls).toEqual(['init', 'register', 'init', 'register']);
    await expect(initBackend('cpu', { kernels: {} as never })).rejects.toThrow(
      /'kernels' must be the @regkit\/kernels module \(initKernels, registerKernels\)/,
    );
  });

  it('registers gradients for stock ops', async () => {
    await initBackend('wasm');
    const g = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(tf.sigmoid(x), x)))(tf.tensor1d([0, 1]));
    const s = 1 / (1 + Math.exp(-1));
    expect(g.dataSync()[0]).toBeCloseTo(0.5, 6);
    expect(g.dataSync()[1]).toBeCloseTo(s + s * (1 - s), 6);
  });
});

describe('conv gradients on wasm equal the cpu backend', () => {
  const cases3d = [
    { x: [1, 6, 7, 5, 2], f: [3, 3, 3, 2, 4], s: 1, p: 'same' },
    { x: [2, 7, 6, 6, 3], f: [3, 3, 3, 3, 2], s: 2, p: 'same' },
    { x: [1, 6, 7, 5, 2], f: [3, 3, 3, 2, 4], s: 1, p: 'valid' },
    { x: [1, 7, 7, 7, 2], f: [3, 3, 3, 2, 3], s: 2, p: 'valid' },
  ] as const;
  it.each(cases3d)('conv3d x=$x f=$f s=$s p=$p: output, input and filter gradients', async (c) => {
    const [cpu, wasm] = await onBoth(() => {
      const x = tf.randomUniform([...c.x], -1, 1, 'float32', 1);
      const f = tf.randomUniform([...c.f], -1, 1, 'float32', 2);
      const y = tf.conv3d(x as tf.Tensor5D, f as tf.Tensor5D, c.s, c.p);
      const w = tf.randomUniform(y.shape, -1, 1, 'float32', 3);
      const [dx, df] = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
        tf.sum(tf.mul(tf.conv3d(a as tf.Tensor5D, b as tf.Tensor5D, c.s, c.p), w)),
      )([x, f]);
      return [y, dx!, df!];
    });
    for (let i = 0; i < 3; i++)
      expect(maxDiff(cpu[i]!, wasm[i]!), `output ${i}`).toBeLessThan(1e-4);
  });

  const cases2d = [
    { x: [2, 9, 8, 3], f: [3, 3, 3, 4], s: 1, p: 'same' },
    { x: [1, 9, 9, 2], f: [3, 3, 2, 2], s: 2, p: 'valid' },
  ] as const;
  it.each(cases2d)('conv2d x=$x f=$f s=$s p=$p: input and filter gradients', async (c) => {
    const [cpu, wasm] = await onBoth(() => {
      const x = tf.randomUniform([...c.x], -1, 1, 'float32', 4);
      const f = tf.randomUniform([...c.f], -1, 1, 'float32', 5);
      const y = tf.conv2d(x as tf.Tensor4D, f as tf.Tensor4D, c.s, c.p);
      const w = tf.randomUniform(y.shape, -1, 1, 'float32', 6);
      const [dx, df] = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
        tf.sum(tf.mul(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, c.s, c.p), w)),
      )([x, f]);
      const dw = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
        tf.sum(tf.mul(tf.depthwiseConv2d(a as tf.Tensor4D, b as tf.Tensor4D, 1, 'same'), 1)),
      )([x, tf.randomUniform([3, 3, c.x[3], 2], -1, 1, 'float32', 7)]);
      return [y, dx!, df!, dw[0]!, dw[1]!];
    });
    for (let i = 0; i < 5; i++) expect(maxDiff(cpu[i]!, wasm[i]!)).toBeLessThan(1e-4);
  });

  it.each([1, 2])(
    'conv3d input and filter gradients match finite differences on wasm (stride %i)',
    async (s) => {
      await initBackend('wasm');
      tf.tidy(() => {
        const x = tf.randomUniform([1, 5, 6, 5, 2], -1, 1, 'float32', 8);
        const f = tf.randomUniform([3, 3, 3, 2, 3], -1, 1, 'float32', 9);
        const conv = (a: tf.Tensor, b: tf.Tensor) =>
          tf.conv3d(a as tf.Tensor5D, b as tf.Tensor5D, s, 'same');
        const w = tf.randomUniform(conv(x, f).shape, -1, 1, 'float32', 10);
        const loss = (a: tf.Tensor, b: tf.Tensor): tf.Scalar => tf.sum(tf.mul(conv(a, b), w));
        checkGradient(loss, [x, f], { eps: 1e-2, rtol: 1e-3, atol: 1e-3 });
      });
    },
  );
});

describe('UnsortedSegmentSum (tf.gather gradient)', () => {
  it.each(['cpu', 'wasm'] as const)('is exact and linear-time on %s', async (b) => {
    await initBackend(b);
    tf.tidy(() => {
      const x = tf.tensor2d([1, 2, 3, 4, 5, 6, 7, 8], [4, 2]);
      const ids = tf.tensor1d([2, 0, 2, -1], 'int32');
      const s = tf.unsortedSegmentSum(x, ids, 3);
      expect(Array.from(s.dataSync())).toEqual([3, 4, 0, 0, 6, 8]);
      // gather gradient on a large index set (quadratic stock cpu kernel would take minutes)
      const table = tf.randomNormal([200_000, 1]);
      const idx = tf.randomUniform([400_000], 0, 200_000, 'int32', 3);
      const g = tf.grad((t: tf.Tensor) => tf.sum(tf.gather(t, idx)))(table);
      expect(tf.sum(g).dataSync()[0]).toBe(400_000);
    });
  });
});
