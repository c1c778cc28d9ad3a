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

/** Per-axis [lo, hi] of a bounding box, 3 axes (leading axes of 1 for 1D/2D maps). */
type Box = [[number, number], [number, number], [number, number]];

/**
 * One pass over both maps: the bounding box of each label's voxels in either map (the union
 * of the two), keyed by label. `shape3` is the spatial shape padded to 3 axes.
 */
function labelBoxes(
  va: ArrayLike<number>,
  vb: ArrayLike<number>,
  shape3: readonly number[],
  wanted: ReadonlySet<number>,
): Map<number, Box> {
  const [n0, n1, n2] = shape3 as [number, number, number];
  const boxes = new Map<number, Box>();
  let i = 0;
  for (let x0 = 0; x0 < n0; x0++) {
    for (let x1 = 0; x1 < n1; x1++) {
      for (let x2 = 0; x2 < n2; x2++, i++) {
        const la = va[i]!;
        const lb = vb[i]!;
        for (let t = 0; t < 2; t++) {
          const l = t === 0 ? la : lb;
          if (t === 1 && lb === la) break;
          if (!wanted.has(l)) continue;
          let box = boxes.get(l);
          if (!box) {
            box = [
              [x0, x0],
              [x1, x1],
              [x2, x2],
            ];
            boxes.set(l, box);
            continue;
          }
          if (x0 > box[0][1]) box[0][1] = x0;
          if (x1 < box[1][0]) box[1][0] = x1;
          if (x1 > box[1][1]) box[1][1] = x1;
          if (x2 < box[2][0]) box[2][0] = x2;
          if (x2 > box[2][1]) box[2][1] = x2;
        }
      }
    }
  }
  return boxes;
}

/**
 * Edge voxels of label `l` of `v` inside `box`, as a mask of the box's shape: label voxels
 * minus the face-connected erosion of the label's mask, with outside the image counted as
 * background (scipy `binary_erosion`'s default). Every voxel of label `l` lies in the box, so
 * a neighbour outside it is background. `ndim`: the map's spatial axes (the trailing ones of
 * the 3 padded axes; a padded axis of 1 has no neighbours).
 */
function edgesInBox(
  v: ArrayLike<number>,
  l: number,
  shape3: readonly number[],
  ndim: number,
  box: Box,
): { mask: Uint8Array; count: number } {
  const [, n1, n2] = shape3 as [number, number, number];
  const s0 = n1 * n2;
  const [[a0, b0], [a1, b1], [a2, b2]] = box;
  const m1 = b1 - a1 + 1;
  const m2 = b2 - a2 + 1;
  const mask = new Uint8Array((b0 - a0 + 1) * m1 * m2);
  const axis0 = ndim >= 3;
  const axis1 = ndim >= 2;
  let count = 0;
  let o = 0;
  for (let x0 = a0; x0 <= b0; x0++) {
    for (let x1 = a1; x1 <= b1; x1++) {
      let i = x0 * s0 + x1 * n2 + a2;
      for (let x2 = a2; x2 <= b2; x2++, i++, o++) {
        if (v[i] !== l) continue;
        const interior =
          x2 > a2 &&
          x2 < b2 &&
          v[i - 1] === l &&
          v[i + 1] === l &&
          (!axis1 || (x1 > a1 && x1 < b1 && v[i - n2] === l && v[i + n2] === l)) &&
          (!axis0 || (x0 > a0 && x0 < b0 && v[i - s0] === l && v[i + s0] === l));
        if (!interior) {
          mask[o] = 1;
          count++;
        }
      }
    }
  }
  return { mask, count };
}

/** Distances (mm) from each of the `count` voxels of `from` to the nearest voxel of `to`. */
function directed(
  from: Uint8Array,
  count: number,
  to: Uint8Array,
  shape: number[],
  spacing: readonly number[],
): Float64Array {
  const d2 = squaredDistanceTransform(to, shape, spacing);
  const out = new Float64Array(count);
  let k = 0;
  for (let i = 0; i < from.length; i++) if (from[i]) out[k++] = Math.sqrt(d2[i]!);
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
  const shape3 = [...new Array<number>(3 - nd).fill(1), ...shape];
  const boxes = labelBoxes(
    va as ArrayLike<number>,
    vb as ArrayLike<number>,
    shape3,
    new Set(labels),
  );
  return labels.map((l) => {
    const box = boxes.get(l);
    if (!box) return Number.NaN;
    // edges on the full grid (the image border counts), distances on the bounding box
    const ea = edgesInBox(va as ArrayLike<number>, l, shape3, nd, box);
    const eb = edgesInBox(vb as ArrayLike<number>, l, shape3, nd, box);
    if (ea.count === 0 || eb.count === 0) return Number.NaN; // missing from one map
    const sub = box.slice(3 - nd).map(([lo, hi]) => hi - lo + 1);
    const dab = directed(ea.mask, ea.count, eb.mask, sub, spacing);
    const dba = directed(eb.mask, eb.count, ea.mask, sub, spacing);
    return Math.max(percentileOf(dab, q), percentileOf(dba, q));
  });
}
