/** The replacement `Slice` kernel (src/fast_slice.ts) against a nested-loop reference. */

import { mulberry32, tf } from '@regkit/core';
import { beforeAll, describe, expect, it } from 'vitest';
// pure helpers, not part of the public API
import { collapseSlice, sliceCopy } from '../src/fast_slice.js';
import { BACKENDS, useBackend } from './helpers.js';

type Dtype = 'float32' | 'int32' | 'bool';
type Value = number | string;

function sizeOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Row-major slice by index arithmetic: out[i] = x[Σ_k (idx_k(i) + begin_k) · stride_k]. */
function referenceSlice<T>(
  x: ArrayLike<T>,
  shape: readonly number[],
  begin: readonly number[],
  size: readonly number[],
): T[] {
  const rank = shape.length;
  const strides = new Array<number>(rank).fill(1);
  for (let k = rank - 2; k >= 0; k--) strides[k] = strides[k + 1]! * shape[k + 1]!;
  const out: T[] = [];
  const n = sizeOf(size);
  for (let i = 0; i < n; i++) {
    let rest = i;
    let src = 0;
    for (let k = rank - 1; k >= 0; k--) {
      const idx = rest % size[k]!;
      rest = Math.floor(rest / size[k]!);
      src += (idx + begin[k]!) * strides[k]!;
    }
    out.push(x[src]!);
  }
  return out;
}

/** `size` with −1 resolved to "to the end". */
function resolveSize(shape: readonly number[], begin: readonly number[], size: readonly number[]) {
  return size.map((s, k) => (s === -1 ? shape[k]! - begin[k]! : s));
}

interface SliceCase {
  shape: number[];
  begin: number[];
  size: number[];
}

/** A random slice: each axis whole, size 1, empty, to the end (−1) or a random window. */
function randomCase(rand: () => number, rank: number): SliceCase {
  const int = (lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1));
  // keep tensors small at high rank, but long enough on the last axes to take the run copy
  const maxDim = rank <= 2 ? 40 : rank <= 4 ? 9 : 5;
  const shape = Array.from({ length: rank }, () => (rand() < 0.05 ? 0 : int(1, maxDim)));
  const begin: number[] = [];
  const size: number[] = [];
  for (const d of shape) {
    const mode = rand();
    if (mode < 0.3 || d === 0) {
      begin.push(0);
      size.push(rand() < 0.5 ? d : -1);
    } else if (mode < 0.45) {
      begin.push(int(0, d - 1));
      size.push(1);
    } else if (mode < 0.5) {
      begin.push(int(0, d));
      size.push(0);
    } else if (mode < 0.65) {
      begin.push(int(0, d - 1));
      size.push(-1);
    } else {
      const b = int(0, d - 1);
      begin.push(b);
      size.push(int(1, d - b));
    }
  }
  return { shape, begin, size };
}

function randomValues(rand: () => number, n: number, dtype: Dtype): number[] {
  return Array.from({ length: n }, () => {
    if (dtype === 'bool') return rand() < 0.5 ? 1 : 0;
    if (dtype === 'int32') return Math.floor(rand() * 2e6) - 1e6;
    return Math.fround(rand() * 200 - 100);
  });
}

const TYPED: Record<Dtype, string> = {
  float32: 'Float32Array',
  int32: 'Int32Array',
  bool: 'Uint8Array',
};

function checkSlice(c: SliceCase, dtype: Dtype, values: number[]): void {
  const x = tf.tensor(values, c.shape, dtype);
  const y = tf.slice(x, c.begin, c.size);
  const size = resolveSize(c.shape, c.begin, c.size);
  const label = `${dtype} shape ${JSON.stringify(c.shape)} begin ${JSON.stringify(c.begin)} size ${JSON.stringify(c.size)}`;
  expect(y.shape, label).toEqual(size);
  expect(y.dtype, label).toBe(dtype);
  const got = y.dataSync();
  expect(got.constructor.name, label).toBe(TYPED[dtype]);
  expectSame(got, referenceSlice(values, c.shape, c.begin, size), label);
  tf.dispose([x, y]);
}

/** Element-wise equality, reporting the first difference (cheaper than toEqual on 10⁵ elements). */
function expectSame(got: ArrayLike<Value>, expected: ArrayLike<Value>, label: string): void {
  expect(got.length, label).toBe(expected.length);
  for (let i = 0; i < got.length; i++) {
    if (got[i] !== expected[i]) {
      expect(got[i], `${label}: first difference at flat index ${i}`).toBe(expected[i]);
    }
  }
}

describe('collapseSlice and sliceCopy', () => {
  it('merges every axis taken whole into the axis before it', () => {
    // one spatial axis of a 3D field: [1·46, 55·46·3], one run of 20·46·3 per row
    expect(collapseSlice([1, 46, 55, 46, 3], [0, 0, 10, 0, 0], [1, 46, 20, 46, 3])).toEqual({
      shape: [46, 55 * 138],
      begin: [0, 10 * 138],
      size: [46, 20 * 138],
    });
    // the last spatial axis: [46·55, 46·3]
    expect(collapseSlice([1, 46, 55, 46, 3], [0, 0, 0, 1, 0], [1, 46, 55, 44, 3])).toEqual({
      shape: [46 * 55, 138],
      begin: [0, 3],
      size: [46 * 55, 132],
    });
    expect(collapseSlice([1, 46, 55, 46, 3], [0, 5, 0, 0, 0], [1, 30, 55, 46, 3])).toEqual({
      shape: [46 * 55 * 46 * 3],
      begin: [5 * 55 * 46 * 3],
      size: [30 * 55 * 46 * 3],
    });
    // a channel: the last axis stays, everything before it merges
    expect(collapseSlice([1, 46, 55, 46, 3], [0, 0, 0, 0, 2], [1, 46, 55, 46, 1])).toEqual({
      shape: [46 * 55 * 46, 3],
      begin: [0, 2],
      size: [46 * 55 * 46, 1],
    });
    // nothing whole: unchanged
    expect(collapseSlice([4, 5, 6], [1, 2, 3], [2, 2, 2])).toEqual({
      shape: [4, 5, 6],
      begin: [1, 2, 3],
      size: [2, 2, 2],
    });
    // a single outer index becomes an offset into the next axis
    expect(collapseSlice([4, 5, 6], [1, 2, 3], [1, 2, 2])).toEqual({
      shape: [20, 6],
      begin: [7, 3],
      size: [2, 2],
    });
    // empty slices stay empty
    expect(collapseSlice([4, 5, 6], [1, 0, 0], [0, 5, 6]).size).toEqual([0]);
    // the whole tensor: one run
    expect(collapseSlice([2, 3, 4], [0, 0, 0], [2, 3, 4])).toEqual({
      shape: [24],
      begin: [0],
      size: [24],
    });
  });

  it('sliceCopy equals the reference on random slices of ranks 1–6', () => {
    const rand = mulberry32(11);
    for (let t = 0; t < 600; t++) {
      const rank = 1 + (t % 6);
      const c = randomCase(rand, rank);
      const size = resolveSize(c.shape, c.begin, c.size);
      const x = Float32Array.from(randomValues(rand, sizeOf(c.shape), 'float32'));
      const out = new Float32Array(sizeOf(size));
      sliceCopy(x, c.shape, c.begin, size, out);
      expectSame(out, referenceSlice(x, c.shape, c.begin, size), JSON.stringify(c));
    }
  });
});

describe.each(BACKENDS)('tf.slice on %s', (backend) => {
  beforeAll(() => useBackend(backend));

  it.each(['float32', 'int32', 'bool'] as const)(
    'random %s slices of ranks 1–6 equal the reference',
    (dtype) => {
      const rand = mulberry32(dtype.length * 101 + backend.length);
      for (let t = 0; t < 300; t++) {
        const c = randomCase(rand, 1 + (t % 6));
        checkSlice(c, dtype, randomValues(rand, sizeOf(c.shape), dtype));
      }
    },
  );

  it.each(['float32', 'int32', 'bool'] as const)(
    'every spatial and channel slice of a [1, 46, 55, 46, 3] %s field',
    (dtype) => {
      const rand = mulberry32(5);
      const shape = [1, 46, 55, 46, 3];
      const values = randomValues(rand, sizeOf(shape), dtype);
      for (let axis = 1; axis < 5; axis++) {
        for (const [b, s] of [
          [0, 1],
          [1, -1],
          [1, 2],
          [0, shape[axis]! - 1],
        ] as const) {
          const begin = shape.map((_, k) => (k === axis ? b : 0));
          const size = shape.map((d, k) => (k === axis ? s : d));
          checkSlice({ shape, begin, size }, dtype, values);
        }
      }
      // interior crop of all spatial axes, and a single voxel
      checkSlice({ shape, begin: [0, 2, 3, 4, 0], size: [1, 40, 50, 40, -1] }, dtype, values);
      checkSlice({ shape, begin: [0, 45, 54, 45, 1], size: [1, 1, 1, 1, 2] }, dtype, values);
    },
  );

  it('begin and size as numbers or shorter than the rank (implicit −1)', () => {
    tf.engine().startScope();
    const x = tf.tensor(
      Array.from({ length: 60 }, (_, i) => i),
      [3, 4, 5],
    );
    const v = Array.from(x.dataSync());
    const ref = (begin: number[], size: number[]) =>
      referenceSlice(v, [3, 4, 5], begin, resolveSize([3, 4, 5], begin, size));
    expect(Array.from(tf.slice(x, 1).dataSync())).toEqual(ref([1, 0, 0], [-1, -1, -1]));
    expect(Array.from(tf.slice(x, 1, 1).dataSync())).toEqual(ref([1, 0, 0], [1, -1, -1]));
    expect(Array.from(tf.slice(x, [1, 2]).dataSync())).toEqual(ref([1, 2, 0], [-1, -1, -1]));
    expect(Array.from(tf.slice(x, [0, 1], [2, 2]).dataSync())).toEqual(ref([0, 1, 0], [2, 2, -1]));
    expect(tf.slice(x, [0, 1], [2, 2]).shape).toEqual([2, 2, 5]);
    tf.engine().endScope();
  });

  it('a contiguous slice outlives its source', () => {
    const x = tf.tensor(
      Array.from({ length: 2 * 3 * 4 * 5 * 2 }, (_, i) => i),
      [2, 3, 4, 5, 2],
      'int32',
    );
    const y = tf.slice(x, [1, 1], [1, 2]);
    const expected = referenceSlice(Array.from(x.dataSync()), x.shape, [1, 1, 0, 0, 0], y.shape);
    x.dispose();
    const z = tf.add(y, 0);
    expectSame(z.dataSync(), expected, 'after disposing the source');
    tf.dispose([y, z]);
  });

  it('rejects slices outside the tensor', () => {
    const x = tf.zeros([3, 4, 5, 2, 2]);
    expect(() => tf.slice(x, [0, 0, 4, 0, 0], [1, 1, 2, 1, 1])).toThrow();
    expect(() => tf.slice(x, [0, 0, -1, 0, 0], [1, 1, 1, 1, 1])).toThrow();
    tf.dispose(x);
  });

  it('string tensors still slice (stock kernel)', () => {
    const rand = mulberry32(3);
    for (const shape of [[7], [3, 4], [2, 3, 2, 2, 3], [2, 1, 3, 2, 2, 2]]) {
      const values = Array.from({ length: sizeOf(shape) }, (_, i) => `s${i}`);
      const x = tf.tensor(values, shape, 'string');
      for (let t = 0; t < 10; t++) {
        const c = randomCase(rand, shape.length);
        const begin = c.begin.map((b, k) => Math.min(b, shape[k]! - 1));
        const size = begin.map((b, k) => 1 + Math.floor(rand() * (shape[k]! - b)));
        const y = tf.slice(x, begin, size);
        expect(y.dtype).toBe('string');
        expect(y.shape).toEqual(size);
        expect(y.dataSync()).toEqual(referenceSlice(values, shape, begin, size));
        y.dispose();
      }
      x.dispose();
    }
  });

  it.each([
    [
      [5, 7],
      [1, 2],
      [3, 4],
    ],
    [
      [2, 4, 5, 3, 2],
      [1, 1, 0, 1, 0],
      [1, 2, -1, 2, 2],
    ],
    [
      [1, 6, 7, 5, 3],
      [0, 2, 0, 0, 1],
      [1, 3, 7, 5, 1],
    ],
    [
      [2, 3, 2, 3, 2, 4],
      [0, 1, 1, 0, 1, 1],
      [2, 2, 1, 3, 1, 3],
    ],
  ])('gradient of sum(slice(x) · w), x %j begin %j size %j', (shape, begin, size) => {
    const rand = mulberry32(9);
    const full = resolveSize(shape, begin, size);
    const xv = randomValues(rand, sizeOf(shape), 'float32');
    const wv = randomValues(rand, sizeOf(full), 'float32');
    const x = tf.tensor(xv, shape);
    const w = tf.tensor(wv, full);
    const g = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.slice(t, begin, size), w)))(x);
    // d/dx: w scattered into the slice window, zero elsewhere
    const expected = new Array<number>(sizeOf(shape)).fill(0);
    const positions = referenceSlice(
      Array.from({ length: sizeOf(shape) }, (_, i) => i),
      shape,
      begin,
      full,
    );
    positions.forEach((p, i) => {
      expected[p] = wv[i]!;
    });
    expect(g.shape).toEqual(shape);
    expect(Array.from(g.dataSync())).toEqual(expected);
    tf.dispose([x, w, g]);
  });

  it('1000 slices keep numTensors and numBytes flat', () => {
    const x = tf.randomUniform([1, 12, 13, 11, 3], 0, 1, 'float32', 4);
    const rand = mulberry32(21);
    const before = tf.memory();
    for (let i = 0; i < 1000; i++) {
      const axis = 1 + (i % 4);
      const begin = x.shape.map((_, k) => (k === axis ? Math.floor(rand() * 3) : 0));
      const size = x.shape.map((d, k) => (k === axis ? 1 + Math.floor(rand() * (d - 3)) : -1));
      tf.slice(x, begin, size).dispose();
      tf.tidy(() => {
        tf.sum(tf.slice(x, begin, size));
      });
    }
    const after = tf.memory();
    expect(after.numTensors).toBe(before.numTensors);
    expect(after.numBytes).toBe(before.numBytes);
    x.dispose();
  });
});

describe.each(BACKENDS)('tf.split (SplitV) on %s', (backend) => {
  beforeAll(() => useBackend(backend));

  it.each(['float32', 'int32', 'bool'] as const)(
    'every axis of a [2, 7, 6, 5, 3] %s tensor, equal and uneven sizes, equals the reference',
    (dtype) => {
      const rand = mulberry32(17 + dtype.length);
      const shape = [2, 7, 6, 5, 3];
      const values = randomValues(rand, sizeOf(shape), dtype);
      const x = tf.tensor(values as number[], shape, dtype);
      for (let axis = 0; axis < shape.length; axis++) {
        const n = shape[axis]!;
        const splits: Array<number | number[]> = [1, [1, n - 1], [n - 2, -1, 1]];
        if (n % 2 === 0) splits.push(2);
        for (const s of splits) {
          const sizes =
            typeof s === 'number'
              ? new Array<number>(s).fill(n / s)
              : s.map((v) => (v === -1 ? n - s.reduce((p, q) => (q === -1 ? p : p + q), 0) : v));
          const parts = tf.split(x, s, axis);
          expect(parts.length).toBe(sizes.length);
          let start = 0;
          parts.forEach((part, i) => {
            const begin = shape.map((_, k) => (k === axis ? start : 0));
            const size = shape.map((d, k) => (k === axis ? sizes[i]! : d));
            expect(part.shape).toEqual(size);
            expect(Array.from(part.dataSync() as ArrayLike<Value>)).toEqual(
              referenceSlice(values, shape, begin, size),
            );
            start += sizes[i]!;
          });
          tf.dispose(parts);
        }
      }
      x.dispose();
    },
  );

  it('the gradient of concat (a SplitV) routes each part back to its input', () => {
    const rand = mulberry32(9);
    const shapes = [
      [1, 3, 4, 5, 2],
      [1, 6, 4, 5, 2],
      [1, 2, 4, 5, 2],
    ];
    const xs = shapes.map((s) =>
      tf.tensor(randomValues(rand, sizeOf(s), 'float32') as number[], s),
    );
    const wv = randomValues(rand, sizeOf([1, 11, 4, 5, 2]), 'float32') as number[];
    const w = tf.tensor(wv, [1, 11, 4, 5, 2]);
    const grads = tf.grads((a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) =>
      tf.sum(tf.mul(tf.concat([a, b, c], 1), w)),
    )(xs);
    let start = 0;
    grads.forEach((g, i) => {
      const size = shapes[i]!;
      expect(Array.from(g.dataSync())).toEqual(
        referenceSlice(wv, [1, 11, 4, 5, 2], [0, start, 0, 0, 0], size),
      );
      start += size[1]!;
    });
    tf.dispose([...xs, w, ...grads]);
  });

  it('rejects sizes that do not add up to the axis', () => {
    const x = tf.zeros([4, 5]);
    expect(() => tf.split(x, [2, 2], 1)).toThrow();
    x.dispose();
  });
});
