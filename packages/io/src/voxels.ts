import { tf } from '@regkit/core';
import { ioFail } from './errors.js';
import { type DatatypeInfo, datatypeByName } from './header.js';
import { columnNorms } from './matrix.js';
import type { NiftiHeaderInfo, Volume } from './types.js';
import { defaultHeader } from './volume.js';
import { NIFTI_INTEGER_RANGES, type NiftiWriteDatatype, storageArray } from './write.js';

/**
 * @internal Shared by the MetaImage, NRRD and MGH readers and writers: voxel storage orders,
 * byte order, the LPS ↔ RAS geometry, and the Volume they return.
 */

const littleEndianHost = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Typed values of any NIfTI-like datatype (64-bit integers as BigInt arrays). */
export type NumArray = ArrayLike<number> | BigInt64Array | BigUint64Array;

/**
 * How channels are stored: `'interleaved'` (MetaImage, NRRD vector axis first: value
 * `(v·C + c)` for voxel v in x-fastest order) or `'planar'` (MGH frames, NRRD list axis last:
 * value `c·nvox + v`).
 */
export type ChannelStorage = 'interleaved' | 'planar';

/** Host-order typed array over `n` values of `bytes` (copied when unaligned or byte-swapped). */
export function typedValues(
  dtype: DatatypeInfo,
  littleEndian: boolean,
  bytes: Uint8Array,
  n: number,
): NumArray {
  const size = dtype.bytes;
  let buf = bytes;
  const swap = size > 1 && littleEndian !== littleEndianHost;
  if (swap || bytes.byteOffset % size !== 0) {
    buf = bytes.slice(0, n * size);
    if (swap) swapBytes(buf, size);
  }
  const ab = buf.buffer;
  const off = buf.byteOffset;
  switch (dtype.name) {
    case 'uint8':
      return new Uint8Array(ab, off, n);
    case 'int8':
      return new Int8Array(ab, off, n);
    case 'int16':
      return new Int16Array(ab, off, n);
    case 'uint16':
      return new Uint16Array(ab, off, n);
    case 'int32':
      return new Int32Array(ab, off, n);
    case 'uint32':
      return new Uint32Array(ab, off, n);
    case 'float32':
      return new Float32Array(ab, off, n);
    case 'float64':
      return new Float64Array(ab, off, n);
    case 'int64':
      return new BigInt64Array(ab, off, n);
    default:
      return new BigUint64Array(ab, off, n);
  }
}

/** Reverses the bytes of every `size`-byte value in place. */
export function swapBytes(buf: Uint8Array, size: number): void {
  if (size < 2) return;
  for (let i = 0; i + size <= buf.length; i += size) {
    for (let a = i, b = i + size - 1; a < b; a++, b--) {
      const t = buf[a]!;
      buf[a] = buf[b]!;
      buf[b] = t;
    }
  }
}

/** 2^24: integers beyond it are not all exact in float32. */
const F32_EXACT = 2 ** 24;

/**
 * Decodes stored values (x fastest, then y, z; channels interleaved or planar) into float32
 * in regkit's row-major array order `[nx, ny, nz, C]`, noting in `warnings` integer values
 * that float32 rounds (beyond 2^24).
 */
export function decodeStored(
  file: string,
  dtype: DatatypeInfo,
  littleEndian: boolean,
  bytes: Uint8Array,
  spatial: readonly number[],
  channels: number,
  storage: ChannelStorage,
  warnings: string[],
): Float32Array {
  const [nx, ny, nz = 1] = spatial as [number, number, number?];
  const nvox = nx * ny * nz;
  const n = nvox * channels;
  let src = typedValues(dtype, littleEndian, bytes, n);
  if (src instanceof BigInt64Array || src instanceof BigUint64Array) {
    const f = new Float64Array(n);
    for (let i = 0; i < n; i++) f[i] = Number(src[i]!);
    src = f;
  }
  const s = src as ArrayLike<number>;
  if (dtype.bytes >= 4 && dtype.name !== 'float32' && dtype.name !== 'float64') {
    let lossy = 0;
    let maxErr = 0;
    for (let i = 0; i < n; i++) {
      const x = s[i]!;
      if (x <= F32_EXACT && x >= -F32_EXACT) continue;
      const e = Math.abs(Math.fround(x) - x);
      if (e > 0) {
        lossy++;
        maxErr = Math.max(maxErr, e);
      }
    }
    if (lossy > 0) {
      warnings.push(
        `${file}: ${lossy.toLocaleString('en-US')} of ${n.toLocaleString('en-US')} ${dtype.name} values do not survive float32 (integers beyond 2^24 are rounded): max error ${maxErr}`,
      );
    }
  }
  const C = channels;
  const out = new Float32Array(n);
  // output ((i·ny + j)·nz + k)·C + c
  const iStride = ny * nz * C;
  for (let k = 0; k < nz; k++) {
    for (let j = 0; j < ny; j++) {
      const v0 = nx * (j + ny * k);
      const o0 = (j * nz + k) * C;
      for (let c = 0; c < C; c++) {
        let o = o0 + c;
        if (storage === 'interleaved') {
          for (let i = 0, si = v0 * C + c; i < nx; i++, si += C, o += iStride) out[o] = s[si]!;
        } else {
          for (let i = 0, si = c * nvox + v0; i < nx; i++, si++, o += iStride) out[o] = s[si]!;
        }
      }
    }
  }
  return out;
}

/**
 * Encodes row-major `[nx, ny, nz, C]` values as `stored` (x fastest; channels interleaved or
 * planar) in host byte order (little-endian on every platform regkit runs on), then swapped
 * to big-endian when `bigEndian`. Integer types store `round(v)` clamped to `range` (the
 * requested datatype's, which may be narrower than the stored one; NaN → 0).
 */
export function encodeStored(
  values: ArrayLike<number>,
  spatial: readonly number[],
  channels: number,
  stored: DatatypeInfo,
  range: readonly [number, number] | undefined,
  storage: ChannelStorage,
  bigEndian: boolean,
): Uint8Array {
  const [nx, ny, nz = 1] = spatial as [number, number, number?];
  const nvox = nx * ny * nz;
  const C = channels;
  const out = new Uint8Array(nvox * C * stored.bytes);
  const dst = storageArray(stored.name, out.buffer, 0, nvox * C);
  const iStride = ny * nz * C;
  for (let k = 0; k < nz; k++) {
    for (let j = 0; j < ny; j++) {
      const v0 = nx * (j + ny * k);
      const s0 = (j * nz + k) * C;
      for (let c = 0; c < C; c++) {
        let si = s0 + c;
        let di = storage === 'interleaved' ? v0 * C + c : c * nvox + v0;
        const step = storage === 'interleaved' ? C : 1;
        if (range) {
          const [lo, hi] = range;
          for (let i = 0; i < nx; i++, di += step, si += iStride) {
            const x = Math.round(values[si]!);
            dst[di] = Number.isNaN(x) ? 0 : Math.min(hi, Math.max(lo, x));
          }
        } else {
          for (let i = 0; i < nx; i++, di += step, si += iStride) dst[di] = values[si]!;
        }
      }
    }
  }
  if (bigEndian === littleEndianHost) swapBytes(out, stored.bytes);
  return out;
}

/** The range an integer datatype holds (undefined for float types). */
export function integerRange(name: string): readonly [number, number] | undefined {
  return NIFTI_INTEGER_RANGES[name as NiftiWriteDatatype];
}

/** The datatype by name, or a `DATATYPE` error listing `allowed`. */
export function writeDatatype(
  file: string,
  name: string | undefined,
  allowed: readonly string[],
): DatatypeInfo {
  const n = name ?? 'float32';
  if (!allowed.includes(n)) {
    ioFail(
      file,
      'DATATYPE',
      `cannot write datatype ${JSON.stringify(n)}; one of ${allowed.map((w) => `'${w}'`).join(', ')}`,
    );
  }
  return datatypeByName(n)!;
}

/**
 * RAS+ affine (row-major 4×4) from ITK's LPS geometry: A = diag(−1, −1, 1) · [D·diag(s) | o].
 * `direction[r][c]` is component r of axis c (the direction matrix, columns = axes), `nd` 2 or
 * 3; a 2D grid gets a third column (0, 0, 1) and z origin 0 (as ITK writes 2D NIfTI).
 */
export function affineFromLps(
  direction: readonly (readonly number[])[],
  spacing: readonly number[],
  origin: readonly number[],
): number[] {
  const nd = spacing.length;
  const a = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
  const flip = [-1, -1, 1];
  for (let r = 0; r < 3; r++) {
    for (let c = 0; c < 3; c++) {
      const v = r < nd && c < nd ? direction[r]![c]! * spacing[c]! : r === c ? 1 : 0;
      a[r * 4 + c] = flip[r]! * v;
    }
    a[r * 4 + 3] = flip[r]! * (r < nd ? origin[r]! : 0);
  }
  return a.map((v) => (v === 0 ? 0 : v)); // no -0
}

/**
 * ITK's LPS geometry of a RAS+ affine for an `nd`-D grid: spacing = column norms (of the
 * first `nd` rows), direction = normalised columns, origin = translation (LPS). Throws
 * `AFFINE` for a 2D affine whose in-plane axes leave the x–y plane (MetaImage/NRRD 2D images
 * have no third physical axis).
 */
export function lpsFromAffine(
  file: string,
  affine: readonly number[],
  nd: number,
): { direction: number[][]; spacing: number[]; origin: number[] } {
  const flip = [-1, -1, 1];
  const lps = (r: number, c: number) => flip[r]! * affine[r * 4 + c]!;
  if (nd === 2) {
    const off =
      Math.abs(affine[8]!) + Math.abs(affine[9]!) + Math.abs(affine[2]!) + Math.abs(affine[6]!);
    if (off > 1e-6 * (1 + Math.abs(affine[0]!) + Math.abs(affine[5]!))) {
      ioFail(
        file,
        'AFFINE',
        'a 2D image whose axes leave the x–y plane cannot be written as a 2D MetaImage/NRRD (write NIfTI, or a 3D volume)',
      );
    }
  }
  const spacing: number[] = [];
  for (let c = 0; c < nd; c++) {
    let s = 0;
    for (let r = 0; r < nd; r++) s += lps(r, c) ** 2;
    spacing.push(Math.sqrt(s));
  }
  const direction = Array.from({ length: nd }, (_, r) =>
    Array.from({ length: nd }, (_, c) => lps(r, c) / spacing[c]!),
  );
  const origin = Array.from({ length: nd }, (_, r) => lps(r, 3));
  return { direction, spacing, origin };
}

/** Formats a number for a text header: shortest round-trip decimal, no `-0`. */
export function num(v: number): string {
  return String(v === 0 ? 0 : v);
}

/**
 * The {@link Volume} of decoded values: counts NaN/±Inf (refused with `NONFINITE` when
 * `allowNonFinite` is false, else a warning), builds the tensor and a header describing the
 * file (`fileFormat`, datatype, byte order; `affineSource` `'header'`).
 */
export function makeVolume(
  file: string,
  values: Float32Array,
  spatial: number[],
  channels: number,
  affine: number[],
  info: {
    format: 'metaimage' | 'nrrd' | 'mgh';
    dtype: DatatypeInfo;
    littleEndian: boolean;
    dataOffset: number;
    description?: string;
  },
  warnings: string[],
  allowNonFinite: boolean | undefined,
): Volume {
  let bad = 0;
  for (let i = 0; i < values.length; i++) {
    const x = values[i]!;
    if (x - x !== 0) bad++;
  }
  if (bad > 0) {
    const counts = `${bad.toLocaleString('en-US')} of ${values.length.toLocaleString('en-US')} values are NaN or ±Inf`;
    if (allowNonFinite === false) ioFail(file, 'NONFINITE', `${counts} (allowNonFinite is false)`);
    warnings.push(`${file}: ${counts}; they are kept as they are (finiteMask(volume) is 0 there)`);
  }
  const spacing = columnNorms(affine, spatial.length);
  const base = defaultHeader(spatial, channels);
  const pixdim = [...base.pixdim];
  const all = columnNorms(affine, 3);
  for (let i = 0; i < 3; i++) pixdim[i + 1] = all[i]!;
  const header: NiftiHeaderInfo = {
    ...base,
    datatype: info.dtype.name,
    datatypeCode: info.dtype.code,
    pixdim,
    littleEndian: info.littleEndian,
    voxOffset: info.dataOffset,
    description: info.description ?? '',
    affineSource: 'header',
    fileFormat: info.format,
  };
  return {
    data: tf.tensor(values, [1, ...spatial, channels], 'float32'),
    affine,
    spacing,
    header,
    warnings,
  };
}

/** Checks a shape against the budget before anything is allocated. */
export function checkBudget(
  file: string,
  spatial: readonly number[],
  channels: number,
  maxVoxels: number,
): number {
  const count = spatial.reduce((a, b) => a * b, 1) * channels;
  if (count > maxVoxels) {
    ioFail(
      file,
      'BUDGET',
      `${[...spatial, channels].join('×')} = ${count.toLocaleString('en-US')} values exceed maxVoxels (${maxVoxels.toLocaleString('en-US')})`,
    );
  }
  return count;
}

/** Checks that `have` bytes hold `need` (a `SIZE` error naming the shape otherwise). */
export function checkBytes(
  file: string,
  have: number,
  need: number,
  spatial: readonly number[],
  channels: number,
  dtype: DatatypeInfo,
): void {
  if (have < need) {
    ioFail(
      file,
      'SIZE',
      `${have} bytes of voxel data, but ${[...spatial, channels].join('×')} ${dtype.name} values need ${need} (truncated file?)`,
    );
  }
}
