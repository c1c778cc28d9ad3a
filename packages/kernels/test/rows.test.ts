/**
 * The row kernels replacing tfjs's `Sum` (over leading axes), `Concat` and `SplitV` (along the
 * last axis): the sum against a float64 reference (relative 2e-7 of the sum of |x|) and
 * bit-identical at 1, 2 and 3 threads; concat and split bit-identical to plain copies; other
 * axes, dtypes and small tensors run tfjs's kernels (same results as before); memory flat.
 */
import { tf } from '@regkit/core';
import { setKernelThreads } from '@regkit/kernels';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS, expectMemoryFlat, expectSameBits, useKernels } from './helpers.js';

const prod = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

function randomValues(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  });
}

describe.each(BACKENDS)('Sum, Concat and SplitV on %s', (backend) => {
  beforeAll(async () => {
    await useKernels(backend);
  });
  afterAll(async () => {
    await setKernelThreads(1);
  });

  it.each([
    [[1, 40, 41, 42, 16], 4, false],
    [[2, 50, 60, 3], 3, true],
    [[300, 700], 1, false],
    [[1, 64, 64, 33, 1], 4, true],
  ] as const)(
    'sum of [%s] over its first %s axes (keepDims %s): float64 reference, same bits at 1–3 threads',
    async (shape, k, keepDims) => {
      const n = prod(shape);
      const values = randomValues(n, 11);
      const C = prod(shape.slice(k));
      const want = new Float64Array(C);
      const abs = new Float64Array(C);
      for (let i = 0; i < n; i++) {
        want[i % C]! += values[i]!;
        abs[i % C]! += Math.abs(values[i]!);
      }
      const x = tf.tensor(values, [...shape]);
      const axes = Array.from({ length: k }, (_, i) => i);
      let first: Float32Array | null = null;
      for (const threads of [1, 2, 3]) {
        await setKernelThreads(threads);
        const y = tf.sum(x, axes, keepDims);
        expect(y.shape).toEqual(
          keepDims ? [...new Array(k).fill(1), ...shape.slice(k)] : [...shape.slice(k)],
        );
        const got = y.dataSync() as Float32Array;
        for (let c = 0; c < C; c++) {
          expect(Math.abs(got[c]! - want[c]!), `channel ${c}`).toBeLessThanOrEqual(
            2e-7 * abs[c]! + 1e-6,
          );
        }
        if (first) expectSameBits(got, first, `sum, ${threads} threads`);
        else first = got.slice();
        y.dispose();
      }
      x.dispose();
    },
  );

  it('other reductions run tfjs (all axes, inner axes, int32, small)', () => {
    const x = tf.tensor(randomValues(2 * 300 * 200, 3), [2, 300, 200]);
    const all = tf.sum(x);
    const inner = tf.sum(x, [1, 2]);
    const ints = tf.sum(tf.ones([100, 700], 'int32'), 0);
    expect(all.shape).toEqual([]);
    expect(inner.shape).toEqual([2]);
    expect(Array.from(ints.dataSync().slice(0, 3))).toEqual([100, 100, 100]);
    const xs = x.dataSync();
    let s = 0;
    for (let i = 0; i < 60000; i++) s += xs[i]!;
    expect(Math.abs(inner.dataSync()[0]! - s)).toBeLessThan(1e-2);
    tf.dispose([x, all, inner, ints]);
  });

  it('concat and split along the last axis are exact copies, at 1–3 threads; concat’s gradient splits', async () => {
    const shapes = [
      [1, 30, 31, 32, 16],
      [1, 30, 31, 32, 3],
      [1, 30, 31, 32, 8],
    ];
    const parts = shapes.map((s, i) => tf.tensor(randomValues(prod(s), 20 + i), s));
    const arrays = parts.map((p) => p.dataSync());
    const widths = shapes.map((s) => s[4]!);
    const total = widths.reduce((a, b) => a + b, 0);
    const R = prod(shapes[0]!.slice(0, 4));
    const want = new Float32Array(R * total);
    for (let r = 0; r < R; r++) {
      let o = r * total;
      for (let i = 0; i < parts.length; i++) {
        want.set(arrays[i]!.subarray(r * widths[i]!, (r + 1) * widths[i]!), o);
        o += widths[i]!;
      }
    }
    for (const threads of [1, 2, 3]) {
      await setKernelThreads(threads);
      const y = tf.concat(parts, -1);
      expect(y.shape).toEqual([1, 30, 31, 32, total]);
      expectSameBits(y.dataSync(), want, `concat, ${threads} threads`);
      const back = tf.split(y, widths, 4);
      back.forEach((b, i) => {
        expectSameBits(b.dataSync(), arrays[i]!, `split ${i}, ${threads} threads`);
      });
      const dy = tf.tensor(want, y.shape);
      const grads = tf.grads((a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => tf.concat([a, b, c], 4))(
        parts,
        dy,
      );
      grads.forEach((g, i) => {
        expectSameBits(g.dataSync(), arrays[i]!, `concat's gradient ${i}, ${threads} threads`);
      });
      tf.dispose([y, dy, ...back, ...grads]);
    }
    tf.dispose(parts);
  });

  it('concat along another axis and small concats run tfjs', () => {
    const a = tf.tensor2d([
      [1, 2],
      [3, 4],
    ]);
    const b = tf.tensor2d([[5, 6]]);
    expect(Array.from(tf.concat([a, b], 0).dataSync())).toEqual([1, 2, 3, 4, 5, 6]);
    expect(Array.from(tf.concat([a, a], 1).dataSync())).toEqual([1, 2, 1, 2, 3, 4, 3, 4]);
    tf.dispose([a, b]);
  });

  it('1000 calls of each at 2 threads keep numTensors and the kernels memory flat', async () => {
    await setKernelThreads(2);
    const a = tf.randomUniform([1, 20, 20, 20, 16], -1, 1, 'float32', 1);
    const b = tf.randomUniform([1, 20, 20, 20, 8], -1, 1, 'float32', 2);
    const step = () =>
      tf.tidy(() => {
        const y = tf.concat([a, b], -1);
        tf.split(y, [16, 8], -1);
        tf.sum(y, [0, 1, 2, 3]);
      });
    expectMemoryFlat(step);
    tf.dispose([a, b]);
  }, 300_000);
});
