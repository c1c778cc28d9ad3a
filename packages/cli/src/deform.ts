import { identityGrid, randomSmoothField, tf, warp } from '@regkit/core';
import { volumeLike } from '@regkit/io';
import { UsageError } from './errors.js';
import {
  checkOutputs,
  disposeVolumes,
  encodeFieldFor,
  encodeImageFor,
  OutputTransaction,
  readInput,
} from './files.js';
import { encodeLabels } from './register.js';

/** Options of the `deform` command. */
export interface DeformCommandOptions {
  image: string;
  out: string;
  trueField: string;
  labels?: string;
  outLabels?: string;
  maxDisplacement?: number;
  controlSpacing?: number;
  seed?: number;
  /** Rotation in degrees: one angle in 2D; in 3D one per spatial axis (about axis 0, then 1, then 2). */
  rotate?: number[];
  /** Scale factor of the linear misalignment, one value or one per spatial axis (default 1). */
  scale?: number[];
  /** Translation in voxels, one per spatial axis (default 0). */
  translate?: number[];
  force?: boolean;
}

/**
 * The voxel-space affine x ↦ M (x − c) + c + t of a misalignment about the grid centre
 * c = (S − 1)/2: M = R·diag(scale), R the product of rotations about spatial axes 0, 1, 2
 * (3D; in the plane of the other two axes, positive from the lower to the higher axis) or
 * the one rotation (2D). Returns M (row-major `[nd][nd]`) and the offset c + t − M c.
 */
export function misalignmentAffine(
  spatial: readonly number[],
  rotateDeg: readonly number[],
  scale: readonly number[],
  translate: readonly number[],
): { matrix: number[][]; offset: number[] } {
  const nd = spatial.length;
  const identity = (): number[][] =>
    Array.from({ length: nd }, (_, i) => Array.from({ length: nd }, (_, j) => (i === j ? 1 : 0)));
  const mul = (a: number[][], b: number[][]) =>
    a.map((row) => b[0]!.map((_, j) => row.reduce((s, v, k) => s + v * b[k]![j]!, 0)));
  let m = identity();
  const planes =
    nd === 3
      ? [
          [1, 2],
          [0, 2],
          [0, 1],
        ]
      : [[0, 1]];
  rotateDeg.forEach((deg, k) => {
    const [i, j] = planes[k]!;
    const r = identity();
    const a = (deg * Math.PI) / 180;
    r[i!]![i!] = Math.cos(a);
    r[i!]![j!] = -Math.sin(a);
    r[j!]![i!] = Math.sin(a);
    r[j!]![j!] = Math.cos(a);
    m = mul(m, r);
  });
  m = m.map((row) => row.map((v, j) => v * scale[j]!));
  const c = spatial.map((s) => (s - 1) / 2);
  const offset = c.map((ci, i) => ci + translate[i]! - m[i]!.reduce((s, v, j) => s + v * c[j]!, 0));
  return { matrix: m, offset };
}

/** `u(x) = A(x + v(x)) − x` `[1, ...S, nd]` for the affine A = (matrix, offset) and the field v. */
function composeAffineAfterField(
  v: tf.Tensor,
  affine: { matrix: number[][]; offset: number[] },
): tf.Tensor {
  return tf.tidy(() => {
    const spatial = v.shape.slice(1, -1);
    const nd = spatial.length;
    const grid = identityGrid(spatial);
    const p = tf.reshape(tf.add(grid, v), [-1, nd]);
    const mT = tf.transpose(tf.tensor2d(affine.matrix, [nd, nd]));
    const q = tf.add(tf.matMul(p, mT), tf.tensor1d(affine.offset));
    return tf.sub(tf.reshape(q, v.shape), grid);
  });
}

/**
 * `regkit deform`: makes a registration problem with a known answer. Writes
 * out(x) = image(x + v(x)) for a seeded random smooth B-spline displacement v (and the labels
 * warped with nearest neighbour); registering `image` (moving) to `out` (fixed) should
 * recover v, written as an ITK/ANTs field to `trueField`. With `rotate`, `scale` or
 * `translate`, a linear misalignment A about the grid centre ({@link misalignmentAffine}) follows
 * the smooth field: out(x) = image(A(x + v(x))), and `trueField` holds the total displacement
 * A(x + v(x)) − x. The outputs are written together or not at all.
 */
export async function deformCommand(o: DeformCommandOptions): Promise<{
  maxDisplacement: number;
  controlSpacing: number;
  seed: number;
  affine?: { matrix: number[][]; offset: number[] };
}> {
  if (o.outLabels && !o.labels) throw new UsageError('--out-labels needs --labels');
  if (o.labels && !o.outLabels) throw new UsageError('--labels needs --out-labels');
  const maxDisplacement = o.maxDisplacement ?? 4;
  const controlSpacing = o.controlSpacing ?? 16;
  const seed = o.seed ?? 1;
  checkOutputs(
    { '--out': o.out, '--true-field': o.trueField, '--out-labels': o.outLabels },
    { '--image': o.image, '--labels': o.labels },
    !!o.force,
  );
  const image = await readInput('--image', o.image);
  const labels = o.labels ? await readInput('--labels', o.labels) : null;
  const keep: tf.Tensor[] = [];
  try {
    const spatial = image.data.shape.slice(1, -1);
    if (labels && !tf.util.arraysEqual(labels.data.shape.slice(1, -1), spatial)) {
      throw new UsageError(`--labels ${o.labels} is not on the grid of --image ${o.image}`);
    }
    const nd = spatial.length;
    const perAxis = (name: string, xs: number[] | undefined, fill: number, n = nd) => {
      if (xs === undefined) return new Array<number>(n).fill(fill);
      if (xs.length === 1 && name === '--scale') return new Array<number>(n).fill(xs[0]!);
      if (xs.length !== n) {
        throw new UsageError(`${name} needs ${n} value(s) for a ${nd}D image, got ${xs.length}`);
      }
      return xs;
    };
    const linear = o.rotate !== undefined || o.scale !== undefined || o.translate !== undefined;
    const scale = perAxis('--scale', o.scale, 1);
    if (scale.some((x) => !(x > 0))) throw new UsageError(`--scale must be > 0, got ${scale}`);
    const affine = linear
      ? misalignmentAffine(
          spatial,
          perAxis('--rotate', o.rotate, 0, nd === 3 ? 3 : 1),
          scale,
          perAxis('--translate', o.translate, 0),
        )
      : undefined;
    const smooth = randomSmoothField(spatial, { maxDisplacement, controlSpacing, seed });
    keep.push(smooth);
    const v = affine ? composeAffineAfterField(smooth, affine) : smooth;
    if (affine) keep.push(v);
    const out = warp(image.data, v);
    keep.push(out);
    const tx = new OutputTransaction(!!o.force);
    tx.stageNifti('--out', o.out, () => encodeImageFor(o.out, volumeLike(image, out)));
    tx.stageNifti('--true-field', o.trueField, () => encodeFieldFor(o.trueField, v, image));
    if (labels && o.outLabels) {
      const l = warp(labels.data, v, { interpolation: 'nearest' });
      keep.push(l);
      tx.stageNifti(
        '--out-labels',
        o.outLabels,
        await encodeLabels(volumeLike(image, l), labels.header.datatype, o.outLabels),
      );
    }
    await tx.commit();
    return { maxDisplacement, controlSpacing, seed, ...(affine ? { affine } : {}) };
  } finally {
    for (const t of keep) t.dispose();
    disposeVolumes(image, labels);
  }
}
