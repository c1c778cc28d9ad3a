import { tf } from '@regkit/core';
import { ioFail } from './errors.js';
import { columnNorms, ioOrientation, mat4Mul } from './matrix.js';
import type { NiftiHeaderInfo, Volume } from './types.js';

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

/** @internal Checks a Volume argument and returns its spatial shape. */
export function checkVolumeArg(fn: string, name: string, v: unknown): number[] {
  const vol = v as Volume;
  if (!vol || typeof vol !== 'object' || !(vol.data instanceof tf.Tensor)) {
    ioFail('', 'OPTION', `${fn}(): '${name}' must be a Volume { data, affine, spacing, header }`);
  }
  if (vol.data.isDisposed) ioFail('', 'OPTION', `${fn}(): '${name}.data' has been disposed`);
  const r = vol.data.rank;
  if ((r !== 4 && r !== 5) || vol.data.shape[0] !== 1) {
    ioFail(
      '',
      'SHAPE',
      `${fn}(): '${name}.data' must be [1, nx, ny, C] or [1, nx, ny, nz, C], got ${fmt(vol.data.shape)}`,
    );
  }
  if (
    !Array.isArray(vol.affine) ||
    vol.affine.length !== 16 ||
    !vol.affine.every((x) => typeof x === 'number' && Number.isFinite(x))
  ) {
    ioFail('', 'AFFINE', `${fn}(): '${name}.affine' must be 16 finite numbers (row-major 4×4)`);
  }
  return vol.data.shape.slice(1, -1);
}

/** @internal A header for new data of `spatial` × `channels` derived from `h`. */
export function deriveHeader(
  header: NiftiHeaderInfo | undefined,
  spatial: readonly number[],
  channels: number,
  affine: readonly number[],
): NiftiHeaderInfo {
  const h = header ?? defaultHeader(spatial, channels);
  const dims = [...h.dims];
  const oldChannels = (dims[0]! >= 4 ? dims[4]! : 1) * (dims[0]! >= 5 ? dims[5]! : 1);
  const nz = spatial[2] ?? 1;
  if (channels === oldChannels && dims[0]! >= 3) {
    dims[1] = spatial[0]!;
    dims[2] = spatial[1]!;
    dims[3] = nz;
  } else {
    dims.splice(0, 8, channels > 1 ? 4 : 3, spatial[0]!, spatial[1]!, nz, channels, 1, 1, 1);
  }
  const zooms = columnNorms(affine, 3);
  const pixdim = [...h.pixdim];
  pixdim[1] = zooms[0]!;
  pixdim[2] = zooms[1]!;
  pixdim[3] = zooms[2]!;
  return {
    ...h,
    dims,
    pixdim,
    qform: h.qform ? [...affine] : null,
    sform: h.sform ? [...affine] : null,
  };
}

/** The default header of volumes not read from a file (float32, codes 0, mm). */
export function defaultHeader(spatial: readonly number[], channels: number): NiftiHeaderInfo {
  return {
    version: 1,
    datatype: 'float32',
    datatypeCode: 16,
    dims: [channels > 1 ? 4 : 3, spatial[0]!, spatial[1]!, spatial[2] ?? 1, channels, 1, 1, 1],
    pixdim: [1, 1, 1, 1, 1, 1, 1, 1],
    sclSlope: 1,
    sclInter: 0,
    qformCode: 0,
    sformCode: 0,
    intentCode: 0,
    intentName: '',
    description: '',
    xyztUnits: 2,
    littleEndian: true,
    voxOffset: 352,
    calMin: 0,
    calMax: 0,
    qform: null,
    sform: null,
    affineSource: 'sform',
  };
}

/**
 * A volume with new data on the reference's grid: same affine, spacing and header (dims
 * updated to the new channel count). `data` must have the reference's spatial shape; it
 * is used as is (cast to float32 when it is not; the cast is a new tensor), not copied.
 *
 * @example
 * ```ts
 * const out = volumeLike(fixed, warp(moving.data, field));
 * await writeNifti('moved.nii.gz', out);
 * ```
 */
export function volumeLike(reference: Volume, data: tf.Tensor): Volume {
  const fn = 'volumeLike';
  const spatial = checkVolumeArg(fn, 'reference', reference);
  if (!(data instanceof tf.Tensor) || data.isDisposed) {
    ioFail('', 'OPTION', `${fn}(): 'data' must be a live tf.Tensor`);
  }
  const got = data.shape.slice(1, -1);
  if (
    data.rank !== reference.data.rank ||
    data.shape[0] !== 1 ||
    !tf.util.arraysEqual(got, spatial)
  ) {
    ioFail(
      '',
      'SHAPE',
      `${fn}(): 'data' ${fmt(data.shape)} must be [1, ${spatial.join(', ')}, C] to match the reference grid ${fmt(reference.data.shape)}`,
    );
  }
  const channels = data.shape[data.rank - 1]!;
  return {
    data: data.dtype === 'float32' ? data : tf.cast(data, 'float32'),
    affine: [...reference.affine],
    spacing: [...reference.spacing],
    header: deriveHeader(reference.header, spatial, channels, reference.affine),
  };
}

/** Axis permutation and flips between a volume's voxel order and its canonical order. */
interface Reorientation {
  /** perm[o] = the original spatial axis that becomes axis o. */
  perm: number[];
  /** flip[s] = original spatial axis s is reversed. */
  flip: boolean[];
}

function reorientation(affine: readonly number[], nd: number): Reorientation {
  const ornt = ioOrientation(affine);
  if (nd === 3) {
    if (ornt.some(([ax]) => ax < 0) || new Set(ornt.map(([ax]) => ax)).size !== 3) {
      return { perm: [0, 1, 2], flip: [false, false, false] };
    }
    const perm = [0, 1, 2].map((o) => ornt.findIndex(([ax]) => ax === o));
    return { perm, flip: ornt.map(([, s]) => s < 0) };
  }
  // 2D: keep the plane; order its two axes by the world axis they follow, make both increase
  const [a0, a1] = [ornt[0]!, ornt[1]!];
  if (a0[0] < 0 || a1[0] < 0) return { perm: [0, 1], flip: [false, false] };
  const perm = a0[0] > a1[0] ? [1, 0] : [0, 1];
  return { perm, flip: [a0[1] < 0, a1[1] < 0] };
}

function isIdentity(r: Reorientation): boolean {
  return r.perm.every((p, i) => p === i) && r.flip.every((f) => !f);
}

/** Old voxel = M · new voxel for the reorientation (row-major 4×4). */
function voxelMap(r: Reorientation, spatial: readonly number[]): number[] {
  const m = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
  const nd = spatial.length;
  for (let o = 0; o < nd; o++) {
    const s = r.perm[o]!;
    if (r.flip[s]) {
      m[s * 4 + o] = -1;
      m[s * 4 + 3] = spatial[s]! - 1;
    } else {
      m[s * 4 + o] = 1;
    }
  }
  if (nd === 2) m[10] = 1;
  return m;
}

/**
 * Reorders the voxels to the closest RAS+ orientation (nibabel `as_closest_canonical`): the
 * axes are permuted and flipped so that axis 0 increases towards Right, 1 towards Anterior,
 * 2 towards Superior, and the affine is updated so every voxel keeps its world position.
 * Voxel values are copied, never interpolated. A 2D volume stays 2D: its two axes are
 * ordered by the world axis they follow most and flipped to increase along it. Returns a new
 * volume (new tensor, also when nothing changes; the data is reordered on the CPU with
 * `dataSync()`); undo with {@link fromCanonical}.
 */
export function toCanonical(volume: Volume): Volume {
  const spatial = checkVolumeArg('toCanonical', 'volume', volume);
  const r = reorientation(volume.affine, spatial.length);
  const data = reorientData(volume.data, r, spatial, 'forward');
  const affine = mat4Mul(volume.affine, voxelMap(r, spatial));
  const newSpatial = r.perm.map((s) => spatial[s]!);
  const channels = volume.data.shape[volume.data.rank - 1]!;
  const header = deriveHeader(volume.header, newSpatial, channels, affine);
  return { data, affine, spacing: columnNorms(affine, spatial.length), header };
}

/**
 * Undoes {@link toCanonical}: puts data in canonical order (e.g. a result computed on
 * `toCanonical(original)`) back into the voxel order of `original`, with its affine and
 * header. The spatial shape must be the canonical shape of `original`; channels may differ.
 */
export function fromCanonical(canonical: Volume, original: Volume): Volume {
  const fn = 'fromCanonical';
  const spatial = checkVolumeArg(fn, 'original', original);
  const cs = checkVolumeArg(fn, 'canonical', canonical);
  const r = reorientation(original.affine, spatial.length);
  const expected = r.perm.map((s) => spatial[s]!);
  if (!tf.util.arraysEqual(cs, expected)) {
    ioFail(
      '',
      'SHAPE',
      `${fn}(): 'canonical' has spatial shape ${fmt(cs)} but the canonical order of 'original' ${fmt(spatial)} is ${fmt(expected)}`,
    );
  }
  const data = reorientData(canonical.data, r, spatial, 'inverse');
  const channels = canonical.data.shape[canonical.data.rank - 1]!;
  return {
    data,
    affine: [...original.affine],
    spacing: [...original.spacing],
    header: deriveHeader(original.header, spatial, channels, original.affine),
  };
}

function reorientData(
  data: tf.Tensor,
  r: Reorientation,
  spatial: readonly number[],
  dir: 'forward' | 'inverse',
): tf.Tensor {
  const nd = spatial.length;
  const channels = data.shape[data.rank - 1]!;
  const values = (
    data.dtype === 'float32' ? data.dataSync() : Float32Array.from(data.dataSync())
  ) as Float32Array;
  if (isIdentity(r)) return tf.tensor(values.slice(), data.shape, 'float32');
  // output axis o reads input axis src[o], reversed when rev[o]
  let src: number[];
  let rev: boolean[];
  let inShape: number[];
  if (dir === 'forward') {
    src = r.perm;
    rev = r.perm.map((s) => r.flip[s]!);
    inShape = [...spatial];
  } else {
    src = new Array<number>(nd);
    r.perm.forEach((s, o) => {
      src[s] = o;
    });
    rev = [...r.flip];
    inShape = r.perm.map((s) => spatial[s]!);
  }
  const inStrides = new Array<number>(nd);
  let acc = channels;
  for (let a = nd - 1; a >= 0; a--) {
    inStrides[a] = acc;
    acc *= inShape[a]!;
  }
  const outShape = src.map((a) => inShape[a]!);
  let base = 0;
  const step = src.map((a, o) => {
    if (rev[o]) {
      base += (inShape[a]! - 1) * inStrides[a]!;
      return -inStrides[a]!;
    }
    return inStrides[a]!;
  });
  const out = new Float32Array(values.length);
  const [n0, n1, n2 = 1] = outShape as [number, number, number?];
  const [s0, s1, s2 = 0] = step as [number, number, number?];
  let o = 0;
  for (let y0 = 0; y0 < n0; y0++) {
    for (let y1 = 0; y1 < n1; y1++) {
      let si = base + y0 * s0 + y1 * s1;
      for (let y2 = 0; y2 < n2; y2++, si += s2) {
        for (let c = 0; c < channels; c++) out[o++] = values[si + c]!;
      }
    }
  }
  return tf.tensor(out, [1, ...outShape, channels], 'float32');
}

/**
 * 1 where a voxel value is finite, 0 where it is NaN or ±Inf: float32, the shape of the data
 * (`[1, ...spatial, C]`). {@link readNifti} keeps NaN/±Inf voxels (SPM writes NaN outside the
 * brain) and reports their count in `volume.warnings`; use this mask to treat them as outside
 * the image, e.g. `tf.where(tf.cast(mask, 'bool'), data, background)` or as a loss weight.
 * The caller disposes the returned tensor.
 *
 * @param volume a {@link Volume} or a tensor of any shape.
 * @example
 * ```ts
 * const vol = await readNifti('spm_mean.nii'); // vol.warnings: ['spm_mean.nii: 12,345 of ... NaN ...']
 * const inside = finiteMask(vol);              // [1, nx, ny, nz, 1], 1 inside the brain
 * ```
 */
export function finiteMask(volume: Volume | tf.Tensor): tf.Tensor {
  const x = volume instanceof tf.Tensor ? volume : (volume as Volume | undefined)?.data;
  if (!(x instanceof tf.Tensor) || x.isDisposed) {
    ioFail('', 'OPTION', "finiteMask(): 'volume' must be a Volume or a live tf.Tensor");
  }
  // x − x is 0 for finite values and NaN for NaN/±Inf (Sub and Equal exist on every backend)
  return tf.tidy(() => {
    const f = x.dtype === 'float32' ? x : tf.cast(x, 'float32');
    return tf.cast(tf.equal(tf.sub(f, f), 0), 'float32');
  });
}
