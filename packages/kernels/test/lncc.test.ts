/**
 * The WebAssembly local NCC (`RegkitLocalNcc`) against PyTorch (losses' fixtures: conv3d box
 * sums + autograd) and against `localNccLoss`'s portable path of tfjs ops, on 2D and 3D,
 * batches, several channels, per-axis windows, windows larger than the image and
 * zero-variance regions; loss and both gradients.
 */
import { readFileSync } from 'node:fs';
import { RegkitLocalNcc, tf } from '@regkit/core';
import { localNccKernelFunc } from '@regkit/kernels';
import { localNccLoss } from '@regkit/losses';
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
    readFileSync(new URL('../../losses/test/fixtures/loss_fixtures.json', import.meta.url), 'utf8'),
  ) as { cases: FixtureCase[] }
).cases.filter((c) => c.op === 'localNccLoss');

/** Loss and gradients of localNccLoss(a, b) for a given window. */
function nccWithGrads(
  a: tf.Tensor,
  b: tf.Tensor,
  window: number | number[],
): [tf.Tensor, tf.Tensor, tf.Tensor] {
  const { value, grads } = tf.variableGrads(
    () => localNccLoss(a, b, { window }),
    [a as tf.Variable, b as tf.Variable],
  );
  return [value, grads[(a as tf.Variable).name]!, grads[(b as tf.Variable).name]!];
}

/** max |x − y| relative to max |y| (mean-loss gradients are small). */
function relDiff(x: tf.Tensor, y: tf.Tensor | { shape: number[]; data: number[] }): number {
  const ref = y instanceof tf.Tensor ? Array.from(y.dataSync()) : y.data;
  const scale = Math.max(...ref.map(Math.abs), 1e-12);
  return maxDiff(x, y) / scale;
}

describe.each(BACKENDS)('local NCC kernel on %s', (backend) => {
  beforeAll(() => useKernels(backend));

  it('localNccLoss runs the WebAssembly kernel', async () => {
    expect(tf.getKernel(RegkitLocalNcc, backend)?.kernelFunc).toBe(localNccKernelFunc);
    const a = tf.randomUniform([1, 8, 9, 1], 0, 1, 'float32', 1);
    const info = await tf.profile(() => localNccLoss(a, a));
    expect(info.kernelNames).toContain(RegkitLocalNcc);
    a.dispose();
  });

  it('has the PyTorch cases', () => {
    expect(CASES.length).toBeGreaterThanOrEqual(4);
  });

  it.each(CASES)('$name matches PyTorch', (c) => {
    tf.tidy(() => {
      const a = tf.variable(tensorOf(c.inputs.a!));
      const b = tf.variable(tensorOf(c.inputs.b!));
      const [loss, dA, dB] = nccWithGrads(a, b, c.params.window as number);
      expect(maxDiff(loss, c.outputs.loss!), 'loss').toBeLessThanOrEqual(1e-5);
      expect(relDiff(dA, c.outputs.dA!), 'dA').toBeLessThanOrEqual(1e-4);
      expect(relDiff(dB, c.outputs.dB!), 'dB').toBeLessThanOrEqual(1e-4);
      tf.dispose([a, b]);
    });
  });

  /** [shape, window]: batches, channels, per-axis windows, windows beyond the image. */
  const SHAPES: Array<[number[], number | number[]]> = [
    [[2, 14, 11, 3], 5],
    [[1, 6, 5, 1], 9],
    [
      [2, 7, 9, 8, 2],
      [3, 5, 7],
    ],
    [[1, 11, 6, 9, 1], 9],
    [[1, 3, 4, 5, 1], 1],
  ];

  it.each(SHAPES.map(([s, w]) => [s.join('x'), JSON.stringify(w), s, w] as const))(
    '%s window %s: loss and gradients match the portable tfjs ops',
    (_s, _w, shape, window) => {
      tf.tidy(() => {
        const u = tf.randomUniform(shape as number[], 0, 1, 'float32', 3);
        const v = tf.randomUniform(shape as number[], 0, 1, 'float32', 4);
        // a zero slab in both images: zero local variance there
        const mask = tf.reshape(tf.cast(tf.greater(tf.range(0, shape[1]!), 1), 'float32'), [
          1,
          shape[1]!,
          ...shape.slice(2).map(() => 1),
        ]);
        const a = tf.variable(tf.mul(u, mask));
        const b = tf.variable(tf.mul(tf.add(tf.mul(u, 0.7), tf.mul(v, 0.3)), mask));
        const ours = nccWithGrads(a, b, window as number | number[]);
        const ref = withPortableOps(() => nccWithGrads(a, b, window as number | number[]));
        expect(maxDiff(ours[0], ref[0]), 'loss').toBeLessThanOrEqual(1e-5);
        expect(relDiff(ours[1], ref[1]), 'dA').toBeLessThanOrEqual(1e-3);
        expect(relDiff(ours[2], ref[2]), 'dB').toBeLessThanOrEqual(1e-3);
        tf.dispose([a, b]);
      });
    },
  );
});
