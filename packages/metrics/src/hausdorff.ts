import { assertImagePair, fail, type tf } from '@regkit/core';
import { squaredDistanceTransform } from './edt.js';
import { labelsPresent } from './labels.js';

/** Options of {@link hausdorff95}. */
export interface HausdorffOptions {
  /** Voxel spacing per spatial axis in mm (default 1). */
  spacing?: readonly number[];
  /** Labels to score, in order (default: every label present in either map, ascending). */
  labels?: readonly number[];
  /** Percentile of the surface distances (default 95). */
  percentile?: number;
}

/**
 * The q-th percentile of `values` (0 ≤ q ≤ 100) with linear interpolation between the closest
 * ranks, as `numpy.percentile` (method 'linear'). `values` is not reordered.
 */
export function percentileOf(values: ArrayLike<number>, q: number): number {
  const sorted = Float64Array.from(values).sort();
  const pos = ((sorted.length - 1) * q) / 100;
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

/** Edge voxels: mask minus its erosion by the cross-shaped (face-connected) element, outside = background. */
function edges(mask: Uint8Array, shape: number[]): Uint8Array {
  const out = new Uint8Array(mask.length);
  const nd = shape.length;
  const strides = shape.map((_, k) => shape.slice(k + 1).reduce((a, b) => a * b, 1));
  const idx = new Array<number>(nd).fill(0);
  for (let i = 0; i < mask.length; i++) {
    if (i > 0) {
      for (let k = nd - 1; k >= 0; k--) {
        if (++idx[k]! < shape[k]!) break;
        idx[k] = 0;
      }
    }
    if (!mask[i]) continue;
    let interior = true;
    for (let k = 0; k < nd && interior; k++) {
      if (idx[k] === 0 || idx[k] === shape[k]! - 1) interior = false;
      else if (!mask[i - strides[k]!] || !mask[i + strides[k]!]) interior = false;
    }
    if (!interior) out[i] = 1;
  }
  return out;
}

/** Distances (mm) from every `from` edge voxel to the nearest `to` edge voxel. */
function directed(
  from: Uint8Array,
  to: Uint8Array,
  shape: number[],
  spacing: readonly number[],
): Float64Array {
  const d2 = squaredDistanceTransform(to, shape, spacing);
  const out: number[] = [];
  for (let i = 0; i < from.length; i++) if (from[i]) out.push(Math.sqrt(d2[i]!));
  return Float64Array.from(out);
}

/** Bounding box (per axis [lo, hi]) of the non-zero voxels of either mask, or null. */
function boundingBox(
  a: Uint8Array,
  b: Uint8Array,
  shape: number[],
): Array<[number, number]> | null {
  const nd = shape.length;
  const box = shape.map(() => [Number.POSITIVE_INFINITY, -1] as [number, number]);
  const idx = new Array<number>(nd).fill(0);
  let any = false;
  for (let i = 0; i < a.length; i++) {
    if (i > 0) {
      for (let k = nd - 1; k >= 0; k--) {
        if (++idx[k]! < shape[k]!) break;
        idx[k] = 0;
      }
    }
    if (!a[i] && !b[i]) continue;
    any = true;
    for (let k = 0; k < nd; k++) {
      if (idx[k]! < box[k]![0]) box[k]![0] = idx[k]!;
      if (idx[k]! > box[k]![1]) box[k]![1] = idx[k]!;
    }
  }
  return any ? box : null;
}

function crop(mask: Uint8Array, shape: number[], box: Array<[number, number]>): Uint8Array {
  const sub = box.map(([lo, hi]) => hi - lo + 1);
  const out = new Uint8Array(sub.reduce((p, q) => p * q, 1));
  const strides = shape.map((_, k) => shape.slice(k + 1).reduce((p, q) => p * q, 1));
  const idx = new Array<number>(shape.length).fill(0);
  for (let o = 0; o < out.length; o++) {
    if (o > 0) {
      for (let k = shape.length - 1; k >= 0; k--) {
        if (++idx[k]! < sub[k]!) break;
        idx[k] = 0;
      }
    }
    let src = 0;
    for (let k = 0; k < shape.length; k++) src += (idx[k]! + box[k]![0]) * strides[k]!;
    out[o] = mask[src]!;
  }
  return out;
}

/**
 * Symmetric Hausdorff distance at the 95th percentile per label, in mm — the MONAI
 * `compute_hausdorff_distance(percentile=95, directed=False)` convention: edges are mask
 * minus its face-connected erosion (scipy `binary_erosion`, outside = background), the
 * distances from each edge voxel of one map to the nearest edge voxel of the other come
 * from an exact Euclidean distance transform with the voxel spacing, and the result is
 * the larger of the two directed 95th percentiles (numpy linear interpolation). A label
 * missing from either map gives NaN. Computed on each label's bounding box (exact).
 *
 * @param a label map `[1, ...S, 1]` (batch 1).
 * @param b label map of the same shape.
 * @returns one distance per label, in label order.
 */
export async function hausdorff95(
  a: tf.Tensor,
  b: tf.Tensor,
  options: HausdorffOptions = {},
): Promise<number[]> {
  const fn = 'hausdorff95';
  const nd = assertImagePair(fn, a, b);
  if (a.shape[0] !== 1) fail(fn, `batch size must be 1, got ${a.shape[0]}`);
  const shape = a.shape.slice(1, 1 + nd);
  const spacing = options.spacing ?? new Array<number>(nd).fill(1);
  if (spacing.length !== nd || spacing.some((s) => !(s > 0))) {
    fail(fn, `'spacing' must be ${nd} positive numbers, got ${JSON.stringify(options.spacing)}`);
  }
  const q = options.percentile ?? 95;
  const [va, vb] = await Promise.all([a.data(), b.data()]);
  const labels = options.labels ?? labelsPresent(va as ArrayLike<number>, vb as ArrayLike<number>);
  return labels.map((l) => {
    const ma = Uint8Array.from(va as ArrayLike<number>, (v) => (v === l ? 1 : 0));
    const mb = Uint8Array.from(vb as ArrayLike<number>, (v) => (v === l ? 1 : 0));
    if (!ma.includes(1) || !mb.includes(1)) return Number.NaN;
    const box = boundingBox(ma, mb, shape)!;
    const sub = box.map(([lo, hi]) => hi - lo + 1);
    // edges on the full grid (the image border counts), then distances on the bounding box
    const ea = crop(edges(ma, shape), shape, box);
    const eb = crop(edges(mb, shape), shape, box);
    const dab = directed(ea, eb, sub, spacing);
    const dba = directed(eb, ea, sub, spacing);
    return Math.max(percentileOf(dab, q), percentileOf(dba, q));
  });
}
