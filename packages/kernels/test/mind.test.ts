/**
 * The WebAssembly MIND-SSC (`RegkitMindSsc`) against PyTorch (losses' fixtures: a port of
 * Heinrich's MINDSSC) and against `mindSsc`'s portable path of tfjs ops (batches, 2D and 3D,
 * radius 0 to 2, dilation 1 to 3, images thinner than the offsets, the variance clamp
 * active); its gradient (`RegkitMindSscGrad`, run by `mindSsc` under a tape) against the
 * autograd of the tfjs-op path (an independent implementation, with the same tie rule of
 * the min) and against central finite differences.
 */
import { readFileSync } from 'node:fs';
import { RegkitMindSsc, RegkitMindSscGrad, tf } from '@regkit/core';
import { kernelMemoryBytes, mindSscGradKernelFunc, mindSscKernelFunc } from '@regkit/kernels';
import { mindSsc } from '@regkit/losses';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  BACKENDS,
  type FixtureCase,
  maxDiff,
  tensorOf,
  useKernels,
  withPortableOps,
} from './helpers.js';

const CASES = (
  JSON.parse(
    readFileSync(
      new URL('../../losses/test/fixtures/feature_fixtures.json', import.meta.url),
      'utf8',
    ),
  ) as { cases: FixtureCase[] }
).cases.filter((c) => c.op === 'mindSsc');

describe.each(BACKENDS)('MIND-SSC kernel on %s', (backend) => {
  beforeAll(() => useKernels(backend));

  it('mindSsc runs the WebAssembly kernels with and without a tape, tfjs ops when portable', async () => {
    expect(tf.getKernel(RegkitMindSsc, backend)?.kernelFunc).toBe(mindSscKernelFunc);
    expect(tf.getKernel(RegkitMindSscGrad, backend)?.kernelFunc).toBe(mindSscGradKernelFunc);
    const x = tf.randomUniform([1, 6, 7, 5, 1], 0, 1, 'float32', 1);
    const plain = await tf.profile(() => mindSsc(x));
    expect(plain.kernelNames).toContain(RegkitMindSsc);
    const taped = await tf.profile(() => tf.grad((y: tf.Tensor) => tf.sum(mindSsc(y)))(x));
    expect(taped.kernelNames).toContain(RegkitMindSsc);
    expect(taped.kernelNames).toContain(RegkitMindSscGrad);
    const portable = await tf.profile(() =>
      withPortableOps(() => tf.grad((y: tf.Tensor) => tf.sum(mindSsc(y)))(x)),
    );
    expect(portable.kernelNames).not.toContain(RegkitMindSsc);
    expect(portable.kernelNames).not.toContain(RegkitMindSscGrad);
    x.dispose();
  });

  it('has the PyTorch cases', () => {
    expect(CASES.length).toBeGreaterThanOrEqual(3);
  });

  it.each(CASES)('$name matches PyTorch (1e-4, as the tfjs-op path)', (c) => {
    tf.tidy(() => {
      const out = mindSsc(tensorOf(c.inputs.x!), c.params as { radius: number; dilation: number });
      expect(maxDiff(out, c.outputs.out!)).toBeLessThanOrEqual(1e-4);
    });
  });

  it.each([
    { shape: [2, 9, 8, 10, 1], radius: 1, dilation: 2 },
    { shape: [1, 5, 12, 7, 1], radius: 2, dilation: 3 },
    { shape: [1, 3, 4, 2, 1], radius: 0, dilation: 1 },
    { shape: [2, 13, 11, 1], radius: 1, dilation: 2 },
    { shape: [1, 6, 9, 1], radius: 2, dilation: 1 },
  ])(
    'matches the tfjs ops for $shape, radius $radius, dilation $dilation',
    ({ shape, radius, dilation }) => {
      tf.tidy(() => {
        const x = tf.randomUniform(shape, 0, 1, 'float32', 3);
        const fast = mindSsc(x, { radius, dilation });
        const ref = withPortableOps(() => mindSsc(x, { radius, dilation }));
        expect(fast.shape).toEqual(ref.shape);
        expect(maxDiff(fast, ref)).toBeLessThanOrEqual(1e-5);
      });
    },
  );

  it('matches the tfjs ops where the variance clamp is active (flat regions, one bright voxel)', () => {
    tf.tidy(() => {
      const flat = tf.buffer([1, 8, 8, 8, 1]);
      flat.set(50, 0, 4, 4, 4, 0);
      const x = tf.add(flat.toTensor(), tf.randomUniform([1, 8, 8, 8, 1], 0, 1e-3, 'float32', 4));
      const fast = mindSsc(x);
      const ref = withPortableOps(() => mindSsc(x));
      expect(maxDiff(fast, ref)).toBeLessThanOrEqual(1e-5);
    });
  });

  /** d/dx of sum(mindSsc(x) · w), w a fixed random cotangent. */
  const mindGrad = (x: tf.Tensor, w: tf.Tensor, options: { radius: number; dilation: number }) =>
    tf.grad((y: tf.Tensor) => tf.sum(tf.mul(mindSsc(y, options), w)))(x);

  /** max |a − b| / max |b|. */
  const relDiff = (a: tf.Tensor, b: tf.Tensor) =>
    tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]! / tf.max(tf.abs(b)).dataSync()[0]!);

  it.each([
    { shape: [2, 9, 8, 10, 1], radius: 1, dilation: 2 },
    { shape: [2, 7, 6, 8, 1], radius: 0, dilation: 1 },
    { shape: [2, 6, 9, 7, 1], radius: 1, dilation: 1 },
    { shape: [2, 8, 7, 6, 1], radius: 0, dilation: 2 },
    { shape: [2, 13, 11, 1], radius: 1, dilation: 2 },
    { shape: [2, 10, 12, 1], radius: 0, dilation: 1 },
    { shape: [2, 11, 9, 1], radius: 1, dilation: 1 },
    { shape: [2, 9, 10, 1], radius: 0, dilation: 2 },
    { shape: [1, 3, 4, 2, 1], radius: 2, dilation: 3 },
  ])(
    'gradient matches the autograd of the tfjs ops for $shape, radius $radius, dilation $dilation (1e-4 relative)',
    ({ shape, radius, dilation }) => {
      tf.tidy(() => {
        const x = tf.randomUniform(shape, 0, 1, 'float32', 6);
        const nd = shape.length - 2;
        const w = tf.randomUniform([...shape.slice(0, -1), nd === 3 ? 12 : 4], -1, 1, 'float32', 7);
        const fast = mindGrad(x, w, { radius, dilation });
        const ref = withPortableOps(() => mindGrad(x, w, { radius, dilation }));
        expect(fast.shape).toEqual(shape);
        expect(relDiff(fast, ref)).toBeLessThanOrEqual(1e-4);
      });
    },
  );

  it('gradient matches the tfjs ops with ties at the min and the variance clamp active', () => {
    tf.tidy(() => {
      // flat image with one bright voxel: most voxels have every pair at ssd 0 (all tied,
      // V below 0.001 m: clamped), near the bright voxel some tied and some not
      const flat = tf.buffer([2, 8, 8, 8, 1]);
      flat.set(50, 0, 4, 4, 4, 0);
      flat.set(20, 1, 2, 5, 3, 0);
      const x = flat.toTensor();
      const w = tf.randomUniform([2, 8, 8, 8, 12], -1, 1, 'float32', 8);
      for (const options of [
        { radius: 1, dilation: 2 },
        { radius: 0, dilation: 1 },
      ]) {
        const fast = mindGrad(x, w, options);
        const ref = withPortableOps(() => mindGrad(x, w, options));
        expect(tf.max(tf.abs(ref)).dataSync()[0]).toBeGreaterThan(0);
        expect(relDiff(fast, ref)).toBeLessThanOrEqual(1e-4);
      }
    });
  });

  // w is non-zero at a few voxels away from the borders only: near the borders the
  // replicate borders make some pairs read the same voxels, so their ssd are tied at the min
  // for every image (the min is then differentiated as tfjs's Min, as by the tfjs ops, which
  // is not the derivative of the function); at a few voxels of a random image the min has no
  // near-tie within ±eps and V is not clamped (the clamp bounds, which depend on the whole
  // image, are constants of the gradient)
  it.each([
    { shape: [1, 9, 10, 1], radius: 1, dilation: 1 },
    { shape: [1, 7, 8, 7, 1], radius: 1, dilation: 1 },
    { shape: [1, 10, 9, 1], radius: 0, dilation: 2 },
    { shape: [2, 9, 9, 1], radius: 1, dilation: 2 },
  ])(
    'gradient matches central finite differences for $shape, radius $radius, dilation $dilation',
    ({ shape, radius, dilation }) => {
      tf.tidy(() => {
        const nd = shape.length - 2;
        const P = nd === 3 ? 12 : 4;
        const margin = radius + dilation;
        const x = tf.randomUniform(shape, 0, 1, 'float32', 9);
        const wb = tf.buffer([...shape.slice(0, -1), P]);
        const rand = tf.randomUniform([8 * P], -1, 1, 'float32', 10).dataSync();
        // 8 voxels at margin + (k, 2k mod, ...) inside the interior
        for (let k = 0; k < 8; k++) {
          const b = k % shape[0]!;
          const pos = shape
            .slice(1, -1)
            .map((n, a) => margin + ((k * (a + 2) + a) % (n - 2 * margin)));
          for (let c = 0; c < P; c++) wb.set(rand[k * P + c]!, b, ...pos, c);
        }
        const w = wb.toTensor();
        const loss = (y: tf.Tensor) =>
          tf.tidy(() => tf.sum(tf.mul(mindSsc(y, { radius, dilation }), w)).dataSync()[0]!);
        const g = mindGrad(x, w, { radius, dilation }).dataSync();
        const values = x.dataSync();
        const eps = 1e-3;
        const fd = new Float32Array(values.length);
        for (let i = 0; i < values.length; i++) {
          const plus = Float32Array.from(values);
          const minus = Float32Array.from(values);
          plus[i]! += eps;
          minus[i]! -= eps;
          fd[i] = (loss(tf.tensor(plus, shape)) - loss(tf.tensor(minus, shape))) / (2 * eps);
        }
        const scale = Math.max(...Array.from(fd, Math.abs));
        let worst = 0;
        for (let i = 0; i < fd.length; i++) worst = Math.max(worst, Math.abs(g[i]! - fd[i]!));
        expect(scale).toBeGreaterThan(0.1);
        expect(worst / scale).toBeLessThanOrEqual(2e-3);
      });
    },
  );

  it('100 calls keep numTensors and the kernel memory flat', () => {
    const x = tf.randomUniform([1, 10, 9, 8, 1], 0, 1, 'float32', 5);
    mindSsc(x).dispose();
    const tensors = tf.memory().numTensors;
    const bytes = kernelMemoryBytes();
    for (let i = 0; i < 100; i++) mindSsc(x).dispose();
    expect(tf.memory().numTensors).toBe(tensors);
    expect(kernelMemoryBytes()).toBe(bytes);
    x.dispose();
  });

  it('100 gradient calls keep numTensors and the kernel memory flat', () => {
    const x = tf.randomUniform([2, 10, 9, 8, 1], 0, 1, 'float32', 5);
    const w = tf.randomUniform([2, 10, 9, 8, 12], -1, 1, 'float32', 6);
    const step = () => tf.tidy(() => mindGrad(x, w, { radius: 1, dilation: 2 }));
    step().dispose();
    const tensors = tf.memory().numTensors;
    const bytes = kernelMemoryBytes();
    for (let i = 0; i < 100; i++) step().dispose();
    expect(tf.memory().numTensors).toBe(tensors);
    expect(kernelMemoryBytes()).toBe(bytes);
    tf.dispose([x, w]);
  });
});
