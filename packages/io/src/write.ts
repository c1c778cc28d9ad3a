import { tf, withValues } from '@regkit/core';
import { ioFail } from './errors.js';
import { type DatatypeInfo, datatypeByName } from './header.js';
import { columnNorms, det3, linearPart, matrixToQuat, polarOrthogonal } from './matrix.js';
import { gzipBytes, gzipBytesSync, writeFileAtomic, writeFilesAtomic } from './platform.js';
import type { NiftiHeaderInfo, Volume } from './types.js';

/** Datatypes the writers produce. */
export type NiftiWriteDatatype =
  | 'float32'
  | 'float64'
  | 'uint8'
  | 'int8'
  | 'int16'
  | 'uint16'
  | 'int32'
  | 'uint32';

const WRITABLE: readonly NiftiWriteDatatype[] = [
  'float32',
  'float64',
  'uint8',
  'int8',
  'int16',
  'uint16',
  'int32',
  'uint32',
];

/** The `[min, max]` a NIfTI integer datatype holds exactly (values written there are clamped to it). */
export const NIFTI_INTEGER_RANGES: Readonly<
  Partial<Record<NiftiWriteDatatype, readonly [number, number]>>
> = {
  uint8: [0, 255],
  int8: [-128, 127],
  int16: [-32768, 32767],
  uint16: [0, 65535],
  int32: [-2147483648, 2147483647],
  uint32: [0, 4294967295],
};

/** Options of {@link encodeNifti}. */
export interface EncodeNiftiOptions {
  /** On-disk type (default `'float32'`). Integer types store `round(v)` clipped to the type's range (NaN → 0), with `scl_slope` 1. */
  datatype?: NiftiWriteDatatype;
  /** gzip-compress the bytes (`.nii.gz`; default false). */
  gzip?: boolean;
  /** gzip level 0–9 (default 1, as nibabel: ~4× faster than 6 on images, files ~20% larger). */
  compressionLevel?: number;
  /** NIfTI version (default 1; 2 when a dimension exceeds 32767). */
  version?: 1 | 2;
  /** `descrip` (≤ 79 ASCII characters; default: the header's, else empty). */
  description?: string;
}

/** Options of {@link writeNifti}. */
export interface WriteNiftiOptions extends Omit<EncodeNiftiOptions, 'gzip'> {
  /** Replace an existing file (default true); false throws `EXISTS` when the file exists. */
  overwrite?: boolean;
}

/** What the writers accept: a {@link Volume} or just data + affine. */
export type VolumeLikeInput =
  | Volume
  | { data: tf.Tensor; affine: number[]; header?: NiftiHeaderInfo };

/** @internal array layout of the channels: `'auto'` (dim[4], or the header's dim[4]·dim[5]) or `'vector'` (ITK: dim[4] = 1, dim[5] = C). */
export type ChannelLayout = 'auto' | 'vector';

/** @internal values row-major `[...spatial, C]` plus geometry. */
export interface EncodeInput {
  values: ArrayLike<number>;
  spatial: number[];
  channels: number;
  affine: number[];
  header?: NiftiHeaderInfo | undefined;
  layout: ChannelLayout;
  intentCode?: number;
  /**
   * Channel mixing applied while storing (float64 arithmetic, one rounding): stored channel c
   * of a voxel is Σ_k mix[c][k] · values[voxel·C + k]. Saves the mixed copy of a large field.
   */
  mix?: readonly (readonly number[])[];
}

/** Checks a volume for writing and returns its spatial shape and channel count. */
export function checkVolume(
  file: string,
  fn: string,
  volume: VolumeLikeInput,
): { spatial: number[]; channels: number } {
  if (!volume || typeof volume !== 'object')
    ioFail(file, 'OPTION', `${fn}(): 'volume' must be a Volume`);
  const data = volume.data;
  if (!(data instanceof tf.Tensor) || data.isDisposed) {
    ioFail(file, 'OPTION', `${fn}(): 'volume.data' must be a live tf.Tensor`);
  }
  if ((data.rank !== 4 && data.rank !== 5) || data.shape[0] !== 1) {
    ioFail(
      file,
      'SHAPE',
      `${fn}(): 'volume.data' must be [1, nx, ny, C] or [1, nx, ny, nz, C], got [${data.shape.join(', ')}]`,
    );
  }
  checkAffine(file, fn, volume.affine);
  return { spatial: data.shape.slice(1, -1), channels: data.shape[data.rank - 1]! };
}

/** Checks a 16-number affine with an invertible linear part. */
export function checkAffine(file: string, fn: string, affine: unknown): asserts affine is number[] {
  if (
    !Array.isArray(affine) ||
    affine.length !== 16 ||
    !affine.every((v) => typeof v === 'number' && Number.isFinite(v))
  ) {
    ioFail(file, 'AFFINE', `${fn}(): 'affine' must be 16 finite numbers (row-major 4×4)`);
  }
  if (det3(linearPart(affine, 3)) === 0) {
    ioFail(file, 'AFFINE', `${fn}(): 'affine' is singular (${affine.join(', ')})`);
  }
}

function resolveDatatype(file: string, name: string | undefined): DatatypeInfo {
  const n = name ?? 'float32';
  if (!WRITABLE.includes(n as NiftiWriteDatatype)) {
    ioFail(
      file,
      'DATATYPE',
      `cannot write datatype ${JSON.stringify(n)}; one of ${WRITABLE.map((w) => `'${w}'`).join(', ')}`,
    );
  }
  return datatypeByName(n)!;
}

/**
 * nibabel `set_qform`: zooms = column norms, qfac = sign of det, closest rotation (polar
 * factor, shears stripped) → quaternion with w ≥ 0.
 */
function qformParams(affine: number[]): {
  quat: [number, number, number, number];
  zooms: number[];
  qfac: number;
} {
  const rzs = linearPart(affine, 3);
  const zooms = columnNorms(affine, 3);
  const r = rzs.map((row) => row.map((v, j) => v / zooms[j]!));
  let qfac = 1;
  if (det3(r) < 0) {
    qfac = -1;
    for (const row of r) row[2] = -row[2]!;
  }
  const pr = polarOrthogonal(r) ?? r;
  return { quat: matrixToQuat(pr), zooms, qfac };
}

function writeString(bytes: Uint8Array, offset: number, maxLen: number, s: string): void {
  for (let i = 0; i < Math.min(s.length, maxLen - 1); i++) {
    const c = s.charCodeAt(i);
    bytes[offset + i] = c < 128 ? c : 63; // '?'
  }
}

/** @internal Values to encode: an array, or a reader giving them (in place) for one synchronous call. */
export type ValuesSource = ArrayLike<number> | { read<T>(fn: (values: ArrayLike<number>) => T): T };

/** @internal The header bytes (`vox_offset` long) and the storage layout of an encoding. */
export interface RawLayout {
  header: Uint8Array;
  dtype: DatatypeInfo;
  nx: number;
  ny: number;
  nz: number;
  nt: number;
  nv: number;
  channels: number;
  count: number;
}

/** @internal exported for benchmarks only (not part of the package's index) */
export function rawLayout(
  file: string,
  input: Omit<EncodeInput, 'values'>,
  opts: EncodeNiftiOptions,
): RawLayout {
  const dtype = resolveDatatype(file, opts.datatype);
  const { spatial, channels, affine, header } = input;
  const nx = spatial[0]!;
  const ny = spatial[1]!;
  const nz = spatial[2] ?? 1;
  let dims: number[];
  if (input.layout === 'vector') {
    dims = [5, nx, ny, nz, 1, channels, 1, 1];
  } else if (channels === 1) {
    dims = [3, nx, ny, nz, 1, 1, 1, 1];
  } else {
    const hd = header && header.dims[0]! >= 5 ? header.dims : null;
    const h4 = hd ? hd[4]! : 0;
    const h5 = hd ? hd[5]! : 0;
    dims =
      h4 >= 1 && h5 > 1 && h4 * h5 === channels
        ? [5, nx, ny, nz, h4, h5, 1, 1]
        : [4, nx, ny, nz, channels, 1, 1, 1];
  }
  const maxDim = Math.max(...dims.slice(1));
  const version = opts.version ?? (maxDim > 32767 ? 2 : 1);
  if (version !== 1 && version !== 2)
    ioFail(file, 'OPTION', `'version' must be 1 or 2, got ${String(version)}`);
  if (version === 1 && maxDim > 32767) {
    ioFail(file, 'SHAPE', `dimension ${maxDim} does not fit NIfTI-1 (max 32767); use version 2`);
  }
  const headerSize = version === 1 ? 348 : 540;
  const voxOffset = headerSize + 4;
  const count = nx * ny * nz * channels;
  const out = new Uint8Array(voxOffset);
  const dv = new DataView(out.buffer);
  const le = true;

  const { quat, zooms, qfac } = qformParams(affine);
  const pixdim = [qfac, zooms[0]!, zooms[1]!, zooms[2]!, 1, 1, 1, 1];
  if (header && dims[0]! >= 4) {
    for (let i = 4; i < 8; i++) {
      const p = header.pixdim[i];
      if (typeof p === 'number' && Number.isFinite(p) && p > 0) pixdim[i] = p;
    }
  }
  const sformCode = header?.sformCode || header?.qformCode || 1;
  const qformCode = header?.qformCode || header?.sformCode || 1;
  const xyzt = header ? header.xyztUnits : 2;
  const intent = input.intentCode ?? 0;
  const descrip = opts.description ?? header?.description ?? '';

  if (version === 1) {
    dv.setInt32(0, 348, le);
    for (let i = 0; i < 8; i++) dv.setInt16(40 + 2 * i, dims[i]!, le);
    dv.setInt16(68, intent, le);
    dv.setInt16(70, dtype.code, le);
    dv.setInt16(72, dtype.bytes * 8, le);
    for (let i = 0; i < 8; i++) dv.setFloat32(76 + 4 * i, pixdim[i]!, le);
    dv.setFloat32(108, voxOffset, le);
    dv.setFloat32(112, 1, le);
    dv.setFloat32(116, 0, le);
    out[123] = xyzt & 0xff;
    writeString(out, 148, 80, descrip);
    dv.setInt16(252, qformCode, le);
    dv.setInt16(254, sformCode, le);
    dv.setFloat32(256, quat[1], le);
    dv.setFloat32(260, quat[2], le);
    dv.setFloat32(264, quat[3], le);
    dv.setFloat32(268, affine[3]!, le);
    dv.setFloat32(272, affine[7]!, le);
    dv.setFloat32(276, affine[11]!, le);
    for (let i = 0; i < 12; i++) dv.setFloat32(280 + 4 * i, affine[i]!, le);
    out.set([0x6e, 0x2b, 0x31, 0], 344);
  } else {
    dv.setInt32(0, 540, le);
    out.set([0x6e, 0x2b, 0x32, 0, 0x0d, 0x0a, 0x1a, 0x0a], 4);
    dv.setInt16(12, dtype.code, le);
    dv.setInt16(14, dtype.bytes * 8, le);
    for (let i = 0; i < 8; i++) dv.setBigInt64(16 + 8 * i, BigInt(dims[i]!), le);
    for (let i = 0; i < 8; i++) dv.setFloat64(104 + 8 * i, pixdim[i]!, le);
    dv.setBigInt64(168, BigInt(voxOffset), le);
    dv.setFloat64(176, 1, le);
    dv.setFloat64(184, 0, le);
    writeString(out, 240, 80, descrip);
    dv.setInt32(344, qformCode, le);
    dv.setInt32(348, sformCode, le);
    dv.setFloat64(352, quat[1], le);
    dv.setFloat64(360, quat[2], le);
    dv.setFloat64(368, quat[3], le);
    dv.setFloat64(376, affine[3]!, le);
    dv.setFloat64(384, affine[7]!, le);
    dv.setFloat64(392, affine[11]!, le);
    for (let i = 0; i < 12; i++) dv.setFloat64(400 + 8 * i, affine[i]!, le);
    dv.setInt32(500, xyzt, le);
    dv.setInt32(504, intent, le);
  }

  return { header: out, dtype, nx, ny, nz, nt: dims[4]!, nv: dims[5]!, channels, count };
}

/** Edge of the square blocks of the transpose in {@link fillPlanes}. */
const TILE = 32;

/**
 * Writes storage planes [p0, p1) (plane P = k + nz·(t + nt·v): NIfTI order, x fastest) of
 * row-major `[nx, ny, nz, C]` values `src` into `storage` (plane p0 at index 0).
 * @internal exported for benchmarks only (not part of the package's index)
 */
export function fillPlanes(
  l: RawLayout,
  input: Pick<EncodeInput, 'mix'>,
  storage: { [i: number]: number },
  src: ArrayLike<number>,
  p0: number,
  p1: number,
): void {
  const { nx, ny, nz, nt, channels } = l;
  const range = NIFTI_INTEGER_RANGES[l.dtype.name as NiftiWriteDatatype];
  const nxy = nx * ny;
  const iStride = ny * nz * channels;
  // storage[(P - p0)·nx·ny + nx·j + i] ← src[((i·ny + j)·nz + k)·C + c], P = k + nz·b. The
  // planes k ∈ [k0, k1) of one block b are rows r = j·nk + (k - k0), nk = k1 - k0, in src
  // order (k fastest): TILE × TILE blocks of (r, i) keep both sides in cache (a plain loop
  // strides by ny·nz·C in src).
  for (let pb = p0; pb < p1; ) {
    const k0 = pb % nz;
    const b = (pb - k0) / nz;
    const k1 = Math.min(nz, k0 + (p1 - pb));
    const nk = k1 - k0;
    const t = b % nt;
    const v = (b - t) / nt;
    const c = t * l.nv + v;
    const R = ny * nk;
    for (let r0 = 0; r0 < R; r0 += TILE) {
      const r1 = Math.min(R, r0 + TILE);
      for (let i0 = 0; i0 < nx; i0 += TILE) {
        const i1 = Math.min(nx, i0 + TILE);
        let j = Math.floor(r0 / nk);
        let k = k0 + r0 - j * nk;
        for (let r = r0; r < r1; r++) {
          let di = (pb - p0 + k - k0) * nxy + nx * j + i0;
          let si = i0 * iStride + (j * nz + k) * channels + c;
          if (range) {
            const [lo, hi] = range;
            for (let i = i0; i < i1; i++, di++, si += iStride) {
              const x = Math.round(src[si]!);
              storage[di] = Math.min(hi, Math.max(lo, x)); // NaN → 0 by the typed array
            }
          } else if (input.mix) {
            const row = input.mix[c]!;
            for (let i = i0, s0 = si - c; i < i1; i++, di++, s0 += iStride) {
              let acc = row[0]! * src[s0]!;
              for (let q = 1; q < channels; q++) acc += row[q]! * src[s0 + q]!;
              storage[di] = acc;
            }
          } else {
            for (let i = i0; i < i1; i++, di++, si += iStride) storage[di] = src[si]!;
          }
          if (++k === k1) {
            k = k0;
            j++;
          }
        }
      }
    }
    pb += nk;
  }
}

function readValues<T>(values: ValuesSource, fn: (v: ArrayLike<number>) => T): T {
  return 'read' in values && typeof values.read === 'function'
    ? values.read(fn)
    : fn(values as ArrayLike<number>);
}

/** @internal Encodes values + geometry as uncompressed NIfTI bytes. */
export function encodeRaw(
  file: string,
  input: Omit<EncodeInput, 'values'> & { values: ValuesSource },
  opts: EncodeNiftiOptions,
): Uint8Array {
  const l = rawLayout(file, input, opts);
  const voxOffset = l.header.length;
  const out = new Uint8Array(voxOffset + l.count * l.dtype.bytes);
  out.set(l.header);
  const storage = storageArray(l.dtype.name, out.buffer, voxOffset, l.count);
  readValues(input.values, (src) => fillPlanes(l, input, storage, src, 0, l.nz * l.nt * l.nv));
  return out;
}

/**
 * @internal The bytes of {@link encodeRaw} in pieces: the header, then about `chunkBytes` of
 * voxels at a time (whole planes), each filled by one synchronous read of `input.values` (in
 * place), so no copy of the whole file is ever held. Concatenated, the pieces are exactly
 * `encodeRaw`'s bytes; the geometry is checked before the first piece is returned.
 */
export function encodeRawChunks(
  file: string,
  input: Omit<EncodeInput, 'values'> & { values: ValuesSource },
  opts: EncodeNiftiOptions,
  chunkBytes = 1 << 22,
): { bytes: number; chunks: () => Generator<Uint8Array> } {
  const l = rawLayout(file, input, opts);
  const planeValues = l.nx * l.ny;
  const planes = l.nz * l.nt * l.nv;
  const perChunk = Math.max(1, Math.floor(chunkBytes / (planeValues * l.dtype.bytes)));
  return {
    bytes: l.header.length + l.count * l.dtype.bytes,
    *chunks() {
      yield l.header;
      for (let p = 0; p < planes; p += perChunk) {
        const q = Math.min(planes, p + perChunk);
        const buf = new Uint8Array((q - p) * planeValues * l.dtype.bytes);
        const storage = storageArray(l.dtype.name, buf.buffer, 0, (q - p) * planeValues);
        readValues(input.values, (src) => fillPlanes(l, input, storage, src, p, q));
        yield buf;
      }
    },
  };
}

/**
 * @internal A typed array of the on-disk type `name` over `count` values of `buffer` at byte
 * `offset` (float32 for any other name), in host byte order: little-endian on every current
 * browser and Node platform, as NIfTI headers say. The NIfTI header is 352 or 544 bytes, so
 * the voxels are 8-byte aligned.
 */
export function storageArray(
  name: string,
  buffer: ArrayBuffer,
  offset: number,
  count: number,
): { [i: number]: number } {
  switch (name) {
    case 'uint8':
      return new Uint8Array(buffer, offset, count);
    case 'int8':
      return new Int8Array(buffer, offset, count);
    case 'int16':
      return new Int16Array(buffer, offset, count);
    case 'uint16':
      return new Uint16Array(buffer, offset, count);
    case 'int32':
      return new Int32Array(buffer, offset, count);
    case 'uint32':
      return new Uint32Array(buffer, offset, count);
    case 'float64':
      return new Float64Array(buffer, offset, count);
    default:
      return new Float32Array(buffer, offset, count);
  }
}

/**
 * Encodes a volume as NIfTI bytes (for browsers, or to write them yourself): NIfTI-1
 * (`vox_offset` 352) unless a dimension exceeds 32767 or `version: 2`. Writes the affine to
 * both the sform and the qform (codes copied from `volume.header`, else 1 = scanner; the
 * qform is the closest rigid + zoom approximation, as nibabel `set_qform`), pixdim from the
 * affine's column norms, channels as `dim[4]` (or the header's `dim[4]·dim[5]` layout).
 * Reads the data in place (`withValues` of core); prefer {@link writeNifti} in Node.
 */
export function encodeNifti(volume: VolumeLikeInput, opts: EncodeNiftiOptions = {}): Uint8Array {
  const file = '<encodeNifti>';
  const { spatial, channels } = checkVolume(file, 'encodeNifti', volume);
  // read in place (no copy on wasm/cpu; int32/bool values are numbers too): encodeRaw is synchronous
  const raw = withValues(volume.data, (values) =>
    encodeRaw(
      file,
      { values, spatial, channels, affine: volume.affine, header: volume.header, layout: 'auto' },
      opts,
    ),
  );
  return opts.gzip ? gzipBytesSync(raw, checkLevel(file, opts.compressionLevel)) : raw;
}

/**
 * The uncompressed NIfTI bytes of {@link encodeNifti} (`gzip` aside) in pieces of about
 * 4 MiB (the header, then whole planes), each read in place from `volume.data` when it is
 * taken: a large volume is written (or gzip-streamed) without a copy of the file in memory.
 * `volume.data` must stay alive, and no tfjs op may run between taking a piece and using it.
 * Concatenated, the pieces equal `encodeNifti(volume, opts)`. `chunkBytes`: the voxel bytes per
 * piece (default 4 MiB; at least one plane).
 * @returns the total size in bytes and a generator of the pieces.
 */
export function encodeNiftiChunks(
  volume: VolumeLikeInput,
  opts: Omit<EncodeNiftiOptions, 'gzip' | 'compressionLevel'> & { chunkBytes?: number } = {},
): { bytes: number; chunks: () => Generator<Uint8Array> } {
  const file = '<encodeNiftiChunks>';
  const { spatial, channels } = checkVolume(file, 'encodeNiftiChunks', volume);
  const data = volume.data;
  return encodeRawChunks(
    file,
    {
      values: { read: (f) => withValues(data, f) },
      spatial,
      channels,
      affine: volume.affine,
      header: volume.header,
      layout: 'auto',
    },
    opts,
    opts.chunkBytes,
  );
}

/** @internal */
export function checkLevel(file: string, level: number | undefined): number {
  const l = level ?? 1;
  if (!Number.isInteger(l) || l < 0 || l > 9) {
    ioFail(file, 'OPTION', `'compressionLevel' must be an integer 0–9, got ${String(level)}`);
  }
  return l;
}

/** @internal `.nii` → false, `.nii.gz` → true, else PATH error. */
export function gzipFromPath(path: string): boolean {
  if (typeof path !== 'string') ioFail(String(path), 'OPTION', "'path' must be a string");
  const lower = path.toLowerCase();
  if (lower.endsWith('.nii.gz')) return true;
  if (lower.endsWith('.nii')) return false;
  ioFail(path, 'PATH', 'the file name must end with .nii or .nii.gz');
}

/** @internal The output files of a path: one `.nii[.gz]`, or a `.hdr` + `.img` pair. */
export function outputFiles(path: string): {
  gzip: boolean;
  pair: { hdr: string; img: string } | null;
} {
  if (typeof path !== 'string') ioFail(String(path), 'OPTION', "'path' must be a string");
  const m = /^(.*)\.(hdr|img)(\.gz)?$/i.exec(path);
  if (!m) {
    const lower = path.toLowerCase();
    if (lower.endsWith('.nii.gz')) return { gzip: true, pair: null };
    if (lower.endsWith('.nii')) return { gzip: false, pair: null };
    ioFail(
      path,
      'PATH',
      'the file name must end with .nii, .nii.gz, .hdr or .img (a NIfTI-1 pair; .hdr.gz/.img.gz compressed)',
    );
  }
  const [, stem, ext, gz = ''] = m as unknown as [string, string, string, string?];
  const upper = ext === ext.toUpperCase();
  const hdrExt = upper ? 'HDR' : 'hdr';
  const imgExt = upper ? 'IMG' : 'img';
  return {
    gzip: gz !== '',
    pair: { hdr: `${stem}.${hdrExt}${gz}`, img: `${stem}.${imgExt}${gz}` },
  };
}

/**
 * @internal Splits single-file NIfTI bytes (from {@link encodeRaw}) into a pair: the header
 * (348 or 540 bytes, magic `ni1`/`ni2`, `vox_offset` 0) and the voxel data.
 */
export function splitPair(raw: Uint8Array): { hdr: Uint8Array; img: Uint8Array } {
  const dv = new DataView(raw.buffer, raw.byteOffset, raw.length);
  const v2 = dv.getInt32(0, true) === 540;
  const headerSize = v2 ? 540 : 348;
  const hdr = raw.slice(0, headerSize);
  const hv = new DataView(hdr.buffer);
  if (v2) {
    hdr.set([0x6e, 0x69, 0x32, 0], 4); // 'ni2\0' + the same \r\n\032\n
    hv.setBigInt64(168, 0n, true);
  } else {
    hdr.set([0x6e, 0x69, 0x31, 0], 344); // 'ni1\0'
    hv.setFloat32(108, 0, true);
  }
  return { hdr, img: raw.subarray(headerSize + 4) };
}

/** @internal downloads data as float32 values. */
export async function floatValues(data: tf.Tensor): Promise<ArrayLike<number>> {
  if (data.dtype === 'float32') return (await data.data()) as Float32Array;
  const cast = tf.cast(data, 'float32');
  try {
    return (await cast.data()) as Float32Array;
  } finally {
    cast.dispose();
  }
}

/**
 * Writes a volume as NIfTI, by the extension: `.nii`, gzip-compressed `.nii.gz`, or a NIfTI-1
 * pair when the path ends in `.hdr` or `.img` (`x.hdr` + `x.img`, magic `ni1`, `vox_offset`
 * 0, the same header fields; `.hdr.gz`/`.img.gz` write both files gzip-compressed). The
 * bytes are those of {@link encodeNifti}; every file goes to a temporary file in the same
 * directory first, and only when all are written are they renamed (the image, then the
 * header), so readers never see a partial file or a header without its image. With
 * `overwrite: false`, an existing target (either file of a pair) throws `EXISTS` and nothing
 * is written.
 *
 * @param path output path: `.nii`, `.nii.gz`, `.hdr`, `.img`, `.hdr.gz` or `.img.gz` (any case).
 * @param volume data `[1, nx, ny, C]` or `[1, nx, ny, nz, C]` with its affine (voxel → RAS+ mm).
 * @example
 * ```ts
 * await writeNifti('warped.nii.gz', volumeLike(fixed, warped));
 * await writeNifti('labels.nii.gz', labels, { datatype: 'uint8' });
 * await writeNifti('for_spm.img', vol); // for_spm.hdr + for_spm.img
 * ```
 */
export async function writeNifti(
  path: string,
  volume: VolumeLikeInput,
  opts: WriteNiftiOptions = {},
): Promise<void> {
  const { gzip: gz, pair } = outputFiles(path);
  const { spatial, channels } = checkVolume(path, 'writeNifti', volume);
  const level = checkLevel(path, opts.compressionLevel);
  const values = await floatValues(volume.data);
  const raw = encodeRaw(
    path,
    { values, spatial, channels, affine: volume.affine, header: volume.header, layout: 'auto' },
    opts,
  );
  const overwrite = opts.overwrite ?? true;
  if (pair) {
    const { hdr, img } = splitPair(raw);
    await writeFilesAtomic(
      [
        { path: pair.img, bytes: gz ? await gzipBytes(img, level) : img },
        { path: pair.hdr, bytes: gz ? await gzipBytes(hdr, level) : hdr },
      ],
      overwrite,
    );
    return;
  }
  const bytes = gz ? await gzipBytes(raw, level) : raw;
  await writeFileAtomic(path, bytes, overwrite);
}
