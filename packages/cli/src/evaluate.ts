import { tf } from '@regkit/core';
import { readDisplacementField } from '@regkit/io';
import {
  foldingPercent,
  logJacobianStd,
  percentileOf,
  squaredDistanceTransform,
} from '@regkit/metrics';
import { squeezeField, thinAxis } from './checks.js';
import { UsageError } from './errors.js';
import { disposeVolumes, readInput } from './files.js';

/** Options of the `eval` command. */
export interface EvalCommandOptions {
  fixedLabels: string;
  warpedLabels: string;
  field?: string;
  labels?: number[];
}

/** What `eval` reports. */
export interface EvalSummary {
  labels: number[];
  dice: number[];
  meanDice: number;
  hd95: number[];
  meanHd95: number;
  foldingPercent?: number;
  logJacobianStd?: number;
}

function mean(values: number[]): number {
  const finite = values.filter((v) => Number.isFinite(v));
  return finite.length ? finite.reduce((a, b) => a + b, 0) / finite.length : Number.NaN;
}

/**
 * Distinct values a label map may have beyond {@link MAX_LABELS_ANY_SIZE}: at most one per
 * two voxels on average (an intensity image has about one per voxel).
 */
export const MAX_LABELS_PER_VOXEL = 0.5;
/** Distinct values any label map may have, whatever its size. */
export const MAX_LABELS_ANY_SIZE = 256;

/**
 * Refuses an image that is not a label map: a value that is not finite, or more distinct
 * values than both {@link MAX_LABELS_ANY_SIZE} and {@link MAX_LABELS_PER_VOXEL} × voxels.
 * Labels may be any finite numbers (1.5 and 2.7 are two labels). Throws a
 * {@link UsageError} naming the option and the file.
 */
export function assertLabelMap(option: string, path: string, values: ArrayLike<number>): void {
  const distinct = new Set<number>();
  const limit = Math.max(MAX_LABELS_ANY_SIZE, Math.floor(MAX_LABELS_PER_VOXEL * values.length));
  for (let i = 0; i < values.length; i++) {
    const x = values[i]!;
    if (!Number.isFinite(x)) {
      throw new UsageError(
        `${option} ${path} is not a label map: voxel ${i} is ${x} (labels must be finite)`,
      );
    }
    distinct.add(x);
    if (distinct.size > limit) {
      throw new UsageError(
        `${option} ${path} is not a label map: more than ${limit} distinct values in ${values.length} voxels (an intensity image?)`,
      );
    }
  }
}

/**
 * Edge voxels of every label in one pass, grouped by label (compressed rows: the edges of
 * label k are `index[start[k]..start[k + 1]]`, ascending). A voxel is an edge of its label
 * when it is on the image border or a face neighbour holds another value (the mask minus
 * its face-connected erosion, outside = background, as `hausdorff95` of `@regkit/metrics`).
 * `ids` gives each voxel's label number (-1: not scored).
 */
function edgesByLabel(
  values: ArrayLike<number>,
  ids: Int32Array,
  labels: number,
  shape: number[],
): { start: Int32Array; index: Int32Array } {
  const nd = shape.length;
  const strides = shape.map((_, k) => shape.slice(k + 1).reduce((a, b) => a * b, 1));
  const idx = new Int32Array(nd);
  const edge = new Uint8Array(values.length);
  const count = new Int32Array(labels + 1);
  for (let i = 0; i < values.length; i++) {
    if (i > 0) {
      for (let k = nd - 1; k >= 0; k--) {
        if (++idx[k]! < shape[k]!) break;
        idx[k] = 0;
      }
    }
    const id = ids[i]!;
    if (id < 0) continue;
    const v = values[i]!;
    let e = false;
    for (let k = 0; k < nd && !e; k++) {
      if (idx[k] === 0 || idx[k] === shape[k]! - 1) e = true;
      else if (values[i - strides[k]!] !== v || values[i + strides[k]!] !== v) e = true;
    }
    if (e) {
      edge[i] = 1;
      count[id + 1]!++;
    }
  }
  for (let k = 0; k < labels; k++) count[k + 1]! += count[k]!;
  const start = count.slice();
  const index = new Int32Array(count[labels]!);
  for (let i = 0; i < values.length; i++) if (edge[i]) index[count[ids[i]!]!++] = i;
  return { start, index };
}

/**
 * Distances (mm) from each edge voxel in `from` to the nearest one in `to` (linear indices
 * of `shape`): directly when the pairs are few, else by an exact distance transform over the
 * bounding box of both.
 */
function directedDistances(
  from: Int32Array,
  to: Int32Array,
  shape: number[],
  spacing: readonly number[],
): Float64Array {
  const nd = shape.length;
  const coords = (list: Int32Array) => {
    const c = new Int32Array(list.length * nd);
    for (let p = 0; p < list.length; p++) {
      let i = list[p]!;
      for (let k = nd - 1; k >= 0; k--) {
        c[p * nd + k] = i % shape[k]!;
        i = Math.floor(i / shape[k]!);
      }
    }
    return c;
  };
  const cf = coords(from);
  const ct = coords(to);
  const lo = new Array<number>(nd).fill(Number.POSITIVE_INFINITY);
  const hi = new Array<number>(nd).fill(-1);
  for (const c of [cf, ct]) {
    for (let j = 0; j < c.length; j++) {
      const k = j % nd;
      if (c[j]! < lo[k]!) lo[k] = c[j]!;
      if (c[j]! > hi[k]!) hi[k] = c[j]!;
    }
  }
  const sub = lo.map((l, k) => hi[k]! - l + 1);
  const box = sub.reduce((a, b) => a * b, 1);
  const out = new Float64Array(from.length);
  if (from.length * to.length <= 4 * box) {
    for (let p = 0; p < from.length; p++) {
      let best = Number.POSITIVE_INFINITY;
      for (let q = 0; q < to.length; q++) {
        let d = 0;
        for (let k = 0; k < nd; k++) {
          const e = (cf[p * nd + k]! - ct[q * nd + k]!) * spacing[k]!;
          d += e * e;
        }
        if (d < best) best = d;
      }
      out[p] = Math.sqrt(best);
    }
    return out;
  }
  const subStrides = sub.map((_, k) => sub.slice(k + 1).reduce((a, b) => a * b, 1));
  const at = (c: Int32Array, p: number) => {
    let s = 0;
    for (let k = 0; k < nd; k++) s += (c[p * nd + k]! - lo[k]!) * subStrides[k]!;
    return s;
  };
  const mask = new Uint8Array(box);
  for (let q = 0; q < to.length; q++) mask[at(ct, q)] = 1;
  const d2 = squaredDistanceTransform(mask, sub, spacing);
  for (let p = 0; p < from.length; p++) out[p] = Math.sqrt(d2[at(cf, p)]!);
  return out;
}

/**
 * Dice and HD95 (mm) per label between two label maps of one grid, in time linear in the
 * voxels and the labels: one pass counts the (a, b) label pairs (Dice = 2·n(l, l) /
 * (n_a(l) + n_b(l))), one pass per map groups every label's edge voxels, and each label's
 * surface distances come from its own edge voxels only. Labels compare exactly (any finite
 * value). HD95 follows `hausdorff95` of `@regkit/metrics` (MONAI): NaN for a label missing
 * from either map; Dice is NaN for a label missing from both.
 */
export function labelOverlap(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  shape: number[],
  spacing: readonly number[],
  labels: readonly number[],
): { dice: number[]; hd95: number[] } {
  const index = new Map(labels.map((l, i) => [l, i]));
  const na = new Float64Array(labels.length);
  const nb = new Float64Array(labels.length);
  const both = new Float64Array(labels.length);
  const ida = new Int32Array(a.length);
  const idb = new Int32Array(b.length);
  for (let i = 0; i < a.length; i++) {
    const ia = index.get(a[i]!) ?? -1;
    const ib = index.get(b[i]!) ?? -1;
    ida[i] = ia;
    idb[i] = ib;
    if (ia >= 0) na[ia]!++;
    if (ib >= 0) nb[ib]!++;
    if (ia >= 0 && ia === ib) both[ia]!++;
  }
  const dice = labels.map((_, i) =>
    na[i]! + nb[i]! === 0 ? Number.NaN : (2 * both[i]!) / (na[i]! + nb[i]!),
  );
  const ea = edgesByLabel(a, ida, labels.length, shape);
  const eb = edgesByLabel(b, idb, labels.length, shape);
  const hd95 = labels.map((_, k) => {
    const pa = ea.index.subarray(ea.start[k]!, ea.start[k + 1]!);
    const pb = eb.index.subarray(eb.start[k]!, eb.start[k + 1]!);
    if (pa.length === 0 || pb.length === 0) return Number.NaN;
    return Math.max(
      percentileOf(directedDistances(pa, pb, shape, spacing), 95),
      percentileOf(directedDistances(pb, pa, shape, spacing), 95),
    );
  });
  return { dice, hd95 };
}

/**
 * `regkit eval`: Dice and HD95 (mm, MONAI convention) per label between two label maps on
 * one grid, and, with a field, its folding percentage and log-Jacobian standard deviation.
 * Both maps must be label maps ({@link assertLabelMap}); labels keep their exact values
 * (non-integer ones included; they are reported as the shortest decimal of their float32).
 * Linear in the number of labels ({@link labelOverlap}).
 */
export async function evalCommand(o: EvalCommandOptions): Promise<EvalSummary> {
  const a = await readInput('--fixed-labels', o.fixedLabels);
  const b = await readInput('--warped-labels', o.warpedLabels).catch((e: unknown) => {
    disposeVolumes(a);
    throw e;
  });
  try {
    if (!tf.util.arraysEqual(a.data.shape, b.data.shape)) {
      throw new UsageError(
        `--fixed-labels ${o.fixedLabels} [${a.data.shape.join(', ')}] and --warped-labels ${o.warpedLabels} [${b.data.shape.join(', ')}] are on different grids`,
      );
    }
    const va = (await a.data.data()) as Float32Array;
    const vb = (await b.data.data()) as Float32Array;
    assertLabelMap('--fixed-labels', o.fixedLabels, va);
    assertLabelMap('--warped-labels', o.warpedLabels, vb);
    const shape = a.data.shape.slice(1, -1);
    // labels are float32 in memory: --labels 2.7 means the float32 nearest 2.7
    const labels = o.labels?.map((l) => Math.fround(l)) ?? nonZeroLabels(va, vb);
    const { dice, hd95 } = labelOverlap(va, vb, shape, a.spacing, labels);
    const summary: EvalSummary = {
      labels: labels.map(shortestFloat32),
      dice,
      meanDice: mean(dice),
      hd95,
      meanHd95: mean(hd95),
    };
    if (o.field) {
      const field = await readDisplacementField(o.field, a);
      try {
        // one voxel thick: the 2D field of the other two axes
        const thin = shape.length === 3 ? thinAxis('--fixed-labels', o.fixedLabels, shape) : -1;
        const f = thin >= 0 ? squeezeField(field, thin) : field;
        try {
          summary.foldingPercent = await foldingPercent(f);
          summary.logJacobianStd = await logJacobianStd(f);
        } finally {
          if (f !== field) f.dispose();
        }
      } finally {
        field.dispose();
      }
    }
    return summary;
  } finally {
    disposeVolumes(a, b);
  }
}

/** The shortest decimal that reads back as the same float32 (2.700000047683716 → 2.7). */
export function shortestFloat32(x: number): number {
  if (!Number.isFinite(x) || Number.isInteger(x)) return x;
  for (let p = 1; p <= 9; p++) {
    const y = Number(x.toPrecision(p));
    if (Math.fround(y) === x) return y;
  }
  return x;
}

function nonZeroLabels(...maps: ArrayLike<number>[]): number[] {
  const set = new Set<number>();
  for (const v of maps) for (let i = 0; i < v.length; i++) if (v[i] !== 0) set.add(v[i]!);
  return [...set].sort((x, y) => x - y);
}

/** Non-zero labels present in any of the maps, ascending, with their exact values. */
export async function presentLabels(...maps: tf.Tensor[]): Promise<number[]> {
  return nonZeroLabels(...(await Promise.all(maps.map((t) => t.data() as Promise<Float32Array>))));
}
