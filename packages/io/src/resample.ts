import { affineField, type Interpolation, type Padding, tf, warp, withValues } from '@regkit/core';
import { ioFail } from './errors.js';
import { invertAffine, mat4Mul } from './matrix.js';
import type { Volume } from './types.js';
import { checkVolumeArg, deriveHeader } from './volume.js';

/** Options of {@link resampleToReference}. */
export interface ResampleOptions {
  /** `'linear'` (default) or `'nearest'` (label maps). */
  interpolation?: Interpolation;
  /**
   * `'zeros'` (default): points outside the moving image take `defaultValue`; `'border'`:
   * the nearest edge value (`defaultValue` is then not used).
   */
  padding?: Padding;
  /**
   * Value of the moving image outside its grid (ANTs `antsApplyTransforms --default-value`),
   * used with `padding: 'zeros'`. Voxels beyond the image count as this value, so linear
   * interpolation blends it with the edge voxels within one voxel of the border and nearest
   * neighbour returns it outside. NaN marks every point whose interpolation touches the
   * outside as NaN. Default `'background'`: {@link backgroundValue} of the moving image —
   * 0 for ordinary images (ANTs' default), the minimum where 0 would be a value the image
   * does not have or the minimum is its background (CT: −1024 or −3024 air/outside the scan).
   */
  defaultValue?: number | 'background';
  /**
   * A displacement `[1, ...referenceSpatial, ndim]` in reference voxels (a registration
   * result): reference voxel x then samples `volume` at T·(x + u(x)), one interpolation in all.
   */
  field?: tf.Tensor;
}

/**
 * The background value of an image, used for points outside it when resampling (the default
 * `defaultValue` of {@link resampleToReference}). With min and max the smallest and largest
 * finite values of all channels:
 * - the minimum when 0 lies outside [min, max] (e.g. an image of 100..4000, or all negative);
 * - the minimum when it is negative and at least half of the voxels on the outer faces of the
 *   grid hold it (a CT whose air or out-of-scan region is −1024 or −3024: 0 would be water);
 * - else 0 (MRI, label maps, signed maps such as statistics or displacements).
 * 0 for images without finite values. Reads the values in place on the backend (no copy).
 *
 * @param volume a {@link Volume}, data `[1, ...spatial, C]`.
 * @returns a value in the image's units.
 */
export function backgroundValue(volume: Volume): number {
  const spatial = checkVolumeArg('backgroundValue', 'volume', volume);
  // read in place (no copy of the volume)
  return withValues(volume.data, (v) => backgroundOf(v, spatial, volume.data.shape));
}

function backgroundOf(v: ArrayLike<number>, spatial: number[], shape: number[]): number {
  let min = Number.POSITIVE_INFINITY;
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < v.length; i++) {
    const x = v[i]!;
    if (x < min) min = x;
    if (x > max) max = x;
  }
  if (!Number.isFinite(min) || !Number.isFinite(max)) {
    // NaN never compares, so only ±Inf can be here: take the finite range
    min = Number.POSITIVE_INFINITY;
    max = Number.NEGATIVE_INFINITY;
    for (let i = 0; i < v.length; i++) {
      const x = v[i]!;
      if (!Number.isFinite(x)) continue;
      if (x < min) min = x;
      if (x > max) max = x;
    }
    if (min > max) return 0;
  }
  if (min > 0 || max < 0) return min;
  if (min === 0) return 0;
  // min < 0 ≤ max: the background only if it dominates the outer faces of the grid
  const channels = shape[shape.length - 1]!;
  const [nx, ny] = spatial as [number, number];
  const nz = spatial[2] ?? 1;
  const is3 = spatial.length === 3;
  let onBorder = 0;
  let atMin = 0;
  for (let i = 0; i < nx; i++) {
    for (let j = 0; j < ny; j++) {
      const edge = i === 0 || i === nx - 1 || j === 0 || j === ny - 1;
      if (!edge && !is3) continue;
      // away from the i and j faces only k = 0 and k = nz − 1 are on the border (3D)
      const step = edge || nz < 2 ? 1 : nz - 1;
      for (let k = 0; k < nz; k += step) {
        const o = ((i * ny + j) * nz + k) * channels;
        for (let c = 0; c < channels; c++) {
          onBorder++;
          if (v[o + c] === min) atMin++;
        }
      }
    }
  }
  return atMin * 2 >= onBorder ? min : 0;
}

/**
 * The voxel map of resampling: moving voxel = T · reference voxel with
 * T = A_moving⁻¹ · A_reference (row-major 4×4).
 */
export function referenceToMovingVoxels(moving: Volume, reference: Volume): number[] {
  const inv = invertAffine(moving.affine);
  if (!inv) ioFail('', 'AFFINE', "resampleToReference(): the affine of 'volume' is singular");
  return mat4Mul(inv, reference.affine);
}

/**
 * Resamples `volume` onto the grid of `reference` through world coordinates: every reference
 * voxel y goes to world A_ref·y and samples `volume` at its voxel A_vol⁻¹·A_ref·y. Runs core's
 * `warp` with the displacement field of that affine map (`affineField`), so it is one kernel
 * call; when the two grids coincide the data is copied unchanged. Both volumes must be 2D or
 * both 3D (2D: the in-plane 2×2 block and translation of the map are used). The result has
 * the reference's affine, spacing and grid, and `volume`'s channels and value fields. With
 * `field`, a displacement on the reference grid is applied in the same single interpolation.
 *
 * @example
 * ```ts
 * const labelsOnFixed = resampleToReference(labels, fixed, { interpolation: 'nearest' });
 * ```
 */
export function resampleToReference(
  volume: Volume,
  reference: Volume,
  opts: ResampleOptions = {},
): Volume {
  const fn = 'resampleToReference';
  const ms = checkVolumeArg(fn, 'volume', volume);
  const rs = checkVolumeArg(fn, 'reference', reference);
  const nd = rs.length;
  if (ms.length !== nd) {
    ioFail(
      '',
      'SHAPE',
      `${fn}(): 'volume' is ${ms.length}D [${ms.join(', ')}] but 'reference' is ${nd}D [${rs.join(', ')}]`,
    );
  }
  if (opts.field) {
    const f = opts.field.shape;
    if (
      f.length !== nd + 2 ||
      f[0] !== 1 ||
      f[nd + 1] !== nd ||
      !tf.util.arraysEqual(f.slice(1, -1), rs)
    ) {
      ioFail(
        '',
        'SHAPE',
        `${fn}(): 'field' [${f.join(', ')}] must be [1, ${rs.join(', ')}, ${nd}] (a displacement on the reference grid)`,
      );
    }
  }
  const t = referenceToMovingVoxels(volume, reference);
  const a = Array.from({ length: nd }, (_, i) =>
    Array.from({ length: nd }, (_, j) => t[i * 4 + j]!),
  );
  const shift = Array.from({ length: nd }, (_, i) => t[i * 4 + 3]!);
  const same =
    tf.util.arraysEqual(ms, rs) &&
    a.every((row, i) => row.every((v, j) => Math.abs(v - (i === j ? 1 : 0)) < 1e-6)) &&
    shift.every((v) => Math.abs(v) < 1e-6);
  const channels = volume.data.shape[volume.data.rank - 1]!;
  const padding = opts.padding ?? 'zeros';
  const dv = opts.defaultValue ?? 'background';
  if (dv !== 'background' && typeof dv !== 'number') {
    ioFail(
      '',
      'OPTION',
      `${fn}(): 'defaultValue' must be a number or 'background', got ${String(dv)}`,
    );
  }
  if (padding === 'border' && opts.defaultValue !== undefined) {
    ioFail(
      '',
      'OPTION',
      `${fn}(): 'defaultValue' is for padding 'zeros'; padding 'border' uses the edge values`,
    );
  }
  const needsDefault = padding === 'zeros' && !(same && !opts.field);
  const fill = !needsDefault ? 0 : dv === 'background' ? backgroundValue(volume) : dv;
  const data = tf.tidy(() => {
    const x = volume.data.dtype === 'float32' ? volume.data : tf.cast(volume.data, 'float32');
    const u = opts.field;
    if (same && !u) return tf.clone(x);
    let field: tf.Tensor;
    if (same) field = u!;
    else {
      // affineField: y = A (x − c) + t' + c with c = (S_ref − 1)/2 → t' = A c + shift − c
      const c = rs.map((s) => (s - 1) / 2);
      const rows = a.map((row, i) => {
        const ac = row.reduce((acc, v, j) => acc + v * c[j]!, 0);
        return [...row, ac + shift[i]! - c[i]!];
      });
      field = affineField([rows], rs);
      // T(x + u) − x = (T x − x) + A u
      if (u)
        field = tf.add(
          field,
          tf.reshape(tf.matMul(tf.reshape(u, [-1, nd]), tf.tensor2d(a), false, true), u.shape),
        );
    }
    const wopts = { interpolation: opts.interpolation ?? 'linear', padding } as const;
    if (fill === 0 || padding === 'border') return warp(x, field, wopts);
    if (Number.isNaN(fill)) {
      // NaN outside: every point whose taps are not all inside the image
      const inside = warp(tf.onesLike(tf.slice(x, 0, [...x.shape.slice(0, -1), 1])), field, wopts);
      const out = warp(x, field, wopts);
      const keep = tf.greaterEqual(tf.add(inside, tf.zerosLike(out)), 1 - 1e-5);
      return tf.where(keep, out, tf.fill(out.shape, Number.NaN));
    }
    // zeros padding lets outside taps contribute 0: shift so that 0 stands for `fill`
    return tf.add(warp(tf.sub(x, fill), field, wopts), fill);
  });
  const header = deriveHeader(reference.header, rs, channels, reference.affine);
  const vh = volume.header;
  if (vh) {
    header.datatype = vh.datatype;
    header.datatypeCode = vh.datatypeCode;
    header.description = vh.description;
    header.intentCode = vh.intentCode;
    header.intentName = vh.intentName;
    header.calMin = vh.calMin;
    header.calMax = vh.calMax;
  }
  return { data, affine: [...reference.affine], spacing: [...reference.spacing], header };
}
