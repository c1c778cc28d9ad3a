import { tf } from '@regkit/core';
import { resampleToReference, type Volume } from '@regkit/io';
import { affineDisplacement, invertAffine } from '@regkit/register';

/** Whether two volumes share one voxel grid (shape and affine). */
export function sameGrid(a: Volume, b: Volume): boolean {
  const sa = a.data.shape.slice(1, -1);
  const sb = b.data.shape.slice(1, -1);
  return tf.util.arraysEqual(sa, sb) && a.affine.every((v, i) => Math.abs(v - b.affine[i]!) < 1e-4);
}

/**
 * Warps `moving` (on its own grid) by a displacement `field` in voxels of `reference`, with
 * one interpolation: reference voxel x samples the moving image at T(x + u(x)),
 * T = A_moving⁻¹ A_reference (`resampleToReference` of `@regkit/io` with its `field`).
 * Returns a volume on the reference grid.
 */
export function warpThroughAffines(
  moving: Volume,
  field: tf.Tensor | null,
  reference: Volume,
  interpolation: 'linear' | 'nearest' = 'linear',
): Volume {
  return resampleToReference(
    moving,
    reference,
    field ? { interpolation, field } : { interpolation },
  );
}

/**
 * The total displacement of an affine after a deformable field, in voxels of one grid:
 * x ↦ a(x + u(x)) − x = (A x + t − x) + A u(x), i.e. `composeFields(a − id, u)` of core
 * computed exactly (as `registerImages` composes; ANTs' `-t warp -t affine`). Without `u`,
 * the affine's own displacement.
 *
 * @param affine `[1, nd, nd + 1]`, voxel x ↦ A x + t on the grid `spatial`.
 * @param field `[1, ...spatial, nd]` or null.
 */
export function affineThenField(
  affine: tf.Tensor,
  field: tf.Tensor | null,
  spatial: number[],
): tf.Tensor {
  return tf.tidy(() => {
    const nd = spatial.length;
    const d = affineDisplacement(affine, spatial);
    if (!field) return d;
    const a = tf.reshape(tf.slice(affine, [0, 0, 0], [1, nd, nd]), [nd, nd]);
    const au = tf.matMul(tf.reshape(field, [-1, nd]), a, false, true);
    return tf.add(d, tf.reshape(au, field.shape));
  });
}

/**
 * The deformable part u of a total displacement `forward(x) = a(x + u(x)) − x`
 * ({@link affineThenField}): u = A⁻¹ (forward − (a − id)), exact.
 */
export function deformablePart(
  affine: tf.Tensor,
  forward: tf.Tensor,
  spatial: number[],
): tf.Tensor {
  return tf.tidy(() => {
    const nd = spatial.length;
    const inv = invertAffine(affine);
    const aInv = tf.reshape(tf.slice(inv, [0, 0, 0], [1, nd, nd]), [nd, nd]);
    const rest = tf.sub(forward, affineDisplacement(affine, spatial));
    return tf.reshape(tf.matMul(tf.reshape(rest, [-1, nd]), aInv, false, true), forward.shape);
  });
}

/**
 * A 2D voxel affine (rows `[2][3]`) of a 3D grid registered as 2D on the axes other than
 * `axis` (one voxel thick), as the 3D affine (rows `[3][4]`) that leaves `axis` unchanged.
 */
export function expandAffine(rows2d: number[][], axis: number): number[][] {
  const other = [0, 1, 2].filter((k) => k !== axis);
  const out: number[][] = [0, 1, 2].map((i) => [0, 1, 2, 3].map((j) => (i === j ? 1 : 0)));
  for (let r = 0; r < 2; r++) {
    for (let c = 0; c < 2; c++) out[other[r]!]![other[c]!] = rows2d[r]![c]!;
    out[other[r]!]![3] = rows2d[r]![2]!;
  }
  return out;
}
