import { tf, withValues } from '@regkit/core';
import { resampleToReference, type Volume } from '@regkit/io';
import { UsageError } from './errors.js';

/** Value summary of an image: range, finiteness and foreground. */
export interface ImageStats {
  min: number;
  max: number;
  /** Voxels that are NaN or ±∞. */
  nonFinite: number;
  voxels: number;
}

/** Range and non-finite count of a tensor, in one pass over its values (read in place). */
export async function imageStats(data: tf.Tensor): Promise<ImageStats> {
  return withValues(data, (v) => rangeOf(v));
}

function rangeOf(v: tf.TypedArray): ImageStats {
  let min = Number.POSITIVE_INFINITY;
  let max = Number.NEGATIVE_INFINITY;
  let nonFinite = 0;
  for (let i = 0; i < v.length; i++) {
    const x = v[i]!;
    if (!Number.isFinite(x)) nonFinite++;
    else {
      if (x < min) min = x;
      if (x > max) max = x;
    }
  }
  return { min, max, nonFinite, voxels: v.length };
}

/**
 * Refuses an image that cannot be registered: non-finite values (NaN, ±∞), or one value
 * everywhere (all zero included: it carries no structure to align). Throws a
 * {@link UsageError} naming the option and the file.
 */
export async function assertRegistrable(
  option: string,
  path: string,
  volume: Volume,
): Promise<ImageStats> {
  const s = await imageStats(volume.data);
  if (s.nonFinite > 0) {
    throw new UsageError(
      `${option} ${path} has ${s.nonFinite} non-finite voxel${s.nonFinite === 1 ? '' : 's'} (NaN or ±Infinity); register needs finite intensities`,
    );
  }
  if (s.max === s.min) {
    throw new UsageError(
      `${option} ${path} is constant (every voxel is ${s.min}): there is nothing to register`,
    );
  }
  return s;
}

/**
 * The axis along which a 3D grid is one voxel thick (registered as 2D on the other two), or
 * -1. Refuses grids thinner than that (two axes of size 1: a line) and 2D grids with a
 * size-1 axis.
 */
export function thinAxis(option: string, path: string, shape: number[]): number {
  const thin = shape.flatMap((n, i) => (n === 1 ? [i] : []));
  if (thin.length === 0) return -1;
  if (shape.length === 3 && thin.length === 1) return thin[0]!;
  throw new UsageError(
    `${option} ${path} is ${shape.join('×')}: a line of voxels cannot be registered (at most one axis of a 3D image may be one voxel thick)`,
  );
}

/**
 * The fraction of the reference's voxels that lie inside the moving image's field of view
 * (through both affines): 0 when the two images do not overlap in space.
 */
export async function fieldOfViewOverlap(moving: Volume, reference: Volume): Promise<number> {
  const ones: Volume = { ...moving, data: tf.onesLike(moving.data) };
  try {
    const r = resampleToReference(ones, reference, { interpolation: 'nearest', defaultValue: 0 });
    try {
      const v = (await r.data.data()) as Float32Array;
      let n = 0;
      for (let i = 0; i < v.length; i++) if (v[i]! > 0.5) n++;
      return n / v.length;
    } finally {
      r.data.dispose();
    }
  } finally {
    ones.data.dispose();
  }
}

/**
 * The fraction of the voxels in the foreground of either image (values above the lowest
 * one by more than 1 % of the range) that are in the foreground of both; 0 when the
 * structures of the two images do not overlap. Both images on one grid.
 */
export async function foregroundOverlap(a: tf.Tensor, b: tf.Tensor): Promise<number> {
  // both read in place (no copies of the two volumes)
  return withValues(a, (va) => withValues(b, (vb) => overlapOf(va, vb)));
}

function overlapOf(va: tf.TypedArray, vb: tf.TypedArray): number {
  const threshold = (v: tf.TypedArray) => {
    let lo = Number.POSITIVE_INFINITY;
    let hi = Number.NEGATIVE_INFINITY;
    for (let i = 0; i < v.length; i++) {
      const x = v[i]!;
      if (x < lo) lo = x;
      if (x > hi) hi = x;
    }
    return lo + 0.01 * (hi - lo);
  };
  const ta = threshold(va);
  const tb = threshold(vb);
  let either = 0;
  let both = 0;
  for (let i = 0; i < va.length; i++) {
    const fa = va[i]! > ta;
    const fb = vb[i]! > tb;
    if (fa || fb) either++;
    if (fa && fb) both++;
  }
  return either === 0 ? 0 : both / either;
}

/**
 * `[1, ...S, 1]` with S one voxel thick along `axis` → `[1, ...S without axis, 1]` (a view of
 * the same values).
 */
export function squeezeAxis(data: tf.Tensor, axis: number): tf.Tensor {
  const shape = data.shape.slice();
  shape.splice(axis + 1, 1);
  return tf.reshape(data, shape);
}

/**
 * A 2D displacement `[1, a, b, 2]` of a grid one voxel thick along `axis` → the 3D field
 * `[1, ...S, 3]` (S = `shape`) with a zero component along `axis`.
 */
export function expandField(field2d: tf.Tensor, shape: number[], axis: number): tf.Tensor {
  const v = field2d.dataSync() as Float32Array;
  const n = v.length / 2;
  const out = new Float32Array(n * 3);
  const other = [0, 1, 2].filter((k) => k !== axis);
  for (let i = 0; i < n; i++) {
    out[3 * i + other[0]!] = v[2 * i]!;
    out[3 * i + other[1]!] = v[2 * i + 1]!;
  }
  return tf.tensor(out, [1, ...shape, 3]);
}

/**
 * The inverse of {@link expandField}: a 3D field `[1, ...S, 3]` one voxel thick along `axis`
 * → the 2D field `[1, a, b, 2]` of the two other components.
 */
export function squeezeField(field: tf.Tensor, axis: number): tf.Tensor {
  const v = field.dataSync() as Float32Array;
  const n = v.length / 3;
  const out = new Float32Array(n * 2);
  const other = [0, 1, 2].filter((k) => k !== axis);
  for (let i = 0; i < n; i++) {
    out[2 * i] = v[3 * i + other[0]!]!;
    out[2 * i + 1] = v[3 * i + other[1]!]!;
  }
  const shape = field.shape.slice(1, -1);
  shape.splice(axis, 1);
  return tf.tensor(out, [1, ...shape, 2]);
}
