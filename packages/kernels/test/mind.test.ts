/**
 * The WebAssembly MIND-SSC (`RegkitMindSsc`) against PyTorch (losses' fixtures: a port of
 * Heinrich's MINDSSC) and against `mindSsc`'s portable path of tfjs ops (batches, 2D and 3D,
 * radius 0 to 2, dilation 1 to 3, images thinner than the offsets, the variance clamp
 * active); under a gradient tape `mindSsc` stays differentiable (tfjs ops).
 */
import { readFileSync } from 'node:fs';
import { RegkitMindSsc, tf } from '@regkit/core';
import { kernelMemoryBytes, mindSscKernelFunc } from '@regkit/kernels';
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

  it('mindSsc runs the WebAssembly kernel without a tape, tfjs ops under one', async () => {
    expect(tf.getKernel(RegkitMindSsc, backend)?.kernelFunc).toBe(mindSscKernelFunc);
    const x = tf.randomUniform([1, 6, 7, 5, 1], 0, 1, 'float32', 1);
    const plain = await tf.profile(() => mindSsc(x));
    expect(plain.kernelNames).toContain(RegkitMindSsc);
    const taped = await tf.profile(() => tf.grad((y: tf.Tensor) => tf.sum(mindSsc(y)))(x));
    expect(taped.kernelNames).not.toContain(RegkitMindSsc);
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
});
