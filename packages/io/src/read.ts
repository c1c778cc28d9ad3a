import { tf } from '@regkit/core';
import { ioFail, RegkitIOError } from './errors.js';
import { checkSize, HEADER_PREFIX, type ParsedHeader, parseHeader } from './header.js';
import { columnNorms } from './matrix.js';
import { gunzipLimited, gunzipPrefix, isGzip, nodeFs } from './platform.js';
import type { Volume } from './types.js';
import { type NumArray, typedValues } from './voxels.js';

/** Options of {@link readNifti}. */
export interface ReadNiftiOptions {
  /** Largest number of values (voxels × channels) to read; larger files throw `BUDGET` before anything is allocated. Default 512³. */
  maxVoxels?: number;
  /**
   * NaN/±Inf voxels (e.g. SPM's NaN outside the brain): `true` (default) reads them unchanged
   * and reports their count in `warnings`; `false` refuses the file with `NONFINITE`.
   */
  allowNonFinite?: boolean;
  /** File name for messages when bytes are given (default `'<bytes>'`). */
  name?: string;
  /**
   * The image file's bytes (`.img`, raw or gzip) when `pathOrBytes` holds the bytes of the
   * `.hdr` of a pair (NIfTI `ni1`/`ni2` or Analyze 7.5); ignored for paths.
   */
  imageBytes?: Uint8Array;
  /** File name of `imageBytes` for messages (default: `name` with `.img` for `.hdr`). */
  imageName?: string;
}

/** Default `maxVoxels`: 512³ values (512 MiB as float32). */
export const DEFAULT_MAX_VOXELS = 512 ** 3;

/** Header bytes read from a `.hdr` file (its gzip stream is inflated up to the header). */
const HDR_READ_LIMIT = 1 << 20;

/** What the readers hand to the decoder. */
interface RawImage {
  parsed: ParsedHeader;
  voxels: Uint8Array;
  /** Extra warnings (pair files). */
  warnings?: string[];
}

/**
 * Reads a NIfTI-1 or NIfTI-2 image (`.nii` or gzip-compressed `.nii.gz`, detected from the
 * bytes), a NIfTI `.hdr/.img` pair (magic `ni1`/`ni2`) or an Analyze 7.5 pair into a float32
 * tensor with its affine.
 *
 * - Pairs: a path ending in `.hdr`, `.img`, `.hdr.gz` or `.img.gz` (any case) reads the pair:
 *   the partner with the same compression suffix first, then the other (`x.img.gz` → `x.hdr.gz`,
 *   else `x.hdr`); a missing partner throws `NOTFOUND` naming it; `vox_offset` is the offset
 *   in the image file (0 usually). With bytes, pass the `.img` bytes as `imageBytes`.
 * - Analyze 7.5 (no magic) is read as nibabel's `nib.load` does (SPM2 Analyze): the affine is
 *   diag(−pixdim₁, pixdim₂, pixdim₃) with the translation from SPM's `origin` field when set
 *   and plausible, else centred on the image (`get_origin_affine`); the scale factor from
 *   `funused1`/`funused2` (else the `glmax`/`glmin` and `cal_max`/`cal_min` ranges). An SPM
 *   `.mat` file next to it is not read (a warning says so).
 * - Axes follow nibabel's array: spatial axis 0 = NIfTI i (`dim[1]`), 1 = j, 2 = k. A file
 *   with `dim[3]` = 1 and `dim[1]`, `dim[2]` > 1 is 2D (`[1, nx, ny, C]`); everything else,
 *   1×1×1 and n×1×1 included, is 3D (`[1, nx, ny, nz, C]`), as nibabel's `img.shape`. C =
 *   `dim[4]·dim[5]·dim[6]·dim[7]` (channel index in C order of those dims, e.g. `t·dim[5] + v`).
 * - `scl_slope`/`scl_inter` are applied (slope 0 or non-finite: none), as nibabel `get_fdata`.
 * - `affine` = sform when `sform_code` > 0, else qform when `qform_code` > 0, else nibabel's
 *   base affine from pixdim (diag(−pixdim₁, pixdim₂, pixdim₃), centred), as nibabel `img.affine`.
 *   Invalid voxel sizes (pixdim 0, negative or non-finite) give a warning; |pixdim| is used for
 *   negative ones (as nibabel), 1 for zero (as nibabel) and non-finite ones.
 * - `warnings` (never thrown): NaN/±Inf voxels, kept as they are, with their count (see
 *   {@link finiteMask}); int32/uint32/int64/uint64 values that float32 cannot hold exactly
 *   (beyond 2^24), with the datatype and the largest rounding error; invalid pixdim.
 * - The header is validated before anything large is allocated: magic, `vox_offset`, dims,
 *   datatype, `maxVoxels`, byte counts; every failure is a {@link RegkitIOError} whose
 *   message starts with the file name (the image file's for errors in its voxel data).
 *
 * @param pathOrBytes a file path (Node.js) or the file's bytes (a `.hdr` with `imageBytes`).
 * @returns a {@link Volume}: `data` float32 `[1, nx, ny, nz, C]` (or `[1, nx, ny, C]`),
 *   `affine` voxel → RAS+ mm, `spacing` mm, `header`, `warnings`.
 * @example
 * ```ts
 * const vol = await readNifti('brain.nii.gz');
 * vol.data.shape; // [1, 181, 217, 181, 1]
 * vol.affine;     // 16 numbers, voxel → RAS+ mm
 * vol.warnings;   // e.g. ['brain.nii.gz: 1,203 of 7,109,137 values are NaN or ±Inf ...']
 * const spm = await readNifti('mean.img'); // reads mean.hdr + mean.img
 * ```
 */
export async function readNifti(
  pathOrBytes: string | Uint8Array,
  opts: ReadNiftiOptions = {},
): Promise<Volume> {
  const isPath = typeof pathOrBytes === 'string';
  const file = isPath ? pathOrBytes : (opts.name ?? '<bytes>');
  const maxVoxels = opts.maxVoxels ?? DEFAULT_MAX_VOXELS;
  if (!(typeof maxVoxels === 'number' && maxVoxels >= 0)) {
    ioFail(file, 'OPTION', `'maxVoxels' must be a non-negative number, got ${String(maxVoxels)}`);
  }
  if (!isPath && !(pathOrBytes instanceof Uint8Array)) {
    ioFail(file, 'OPTION', 'readNifti() needs a path (string) or the file bytes (Uint8Array)');
  }
  if (opts.imageBytes !== undefined && !(opts.imageBytes instanceof Uint8Array)) {
    ioFail(file, 'OPTION', "'imageBytes' must be a Uint8Array (the .img file's bytes)");
  }
  let raw: RawImage;
  if (isPath) {
    const pair = pairPaths(pathOrBytes);
    raw = pair
      ? await readPairFromPaths(pathOrBytes, pair, maxVoxels)
      : await readFromPath(pathOrBytes, file, maxVoxels);
  } else if (opts.imageBytes) {
    const imageName =
      opts.imageName ?? (/\.hdr$/i.test(file) ? file.replace(/hdr$/i, 'img') : `${file} (image)`);
    raw = await readPairFromBytes(pathOrBytes, opts.imageBytes, file, imageName, maxVoxels);
  } else {
    raw = await readFromBytes(pathOrBytes, file, maxVoxels);
  }
  const { parsed } = raw;
  const warnings = [...parsed.warnings, ...(raw.warnings ?? [])];
  const values = decodeVoxels(parsed, raw.voxels, file, warnings);
  let bad = 0;
  for (let i = 0; i < values.length; i++) {
    const x = values[i]!;
    if (x - x !== 0) bad++;
  }
  if (bad > 0) {
    const counts = `${bad.toLocaleString('en-US')} of ${values.length.toLocaleString('en-US')} values are NaN or ±Inf`;
    if (opts.allowNonFinite === false) {
      ioFail(file, 'NONFINITE', `${counts} (allowNonFinite is false)`);
    }
    warnings.push(`${file}: ${counts}; they are kept as they are (finiteMask(volume) is 0 there)`);
  }
  const shape = [1, ...parsed.spatial, parsed.channels];
  const data = tf.tensor(values, shape, 'float32');
  return {
    data,
    affine: [...parsed.affine],
    spacing: columnNorms(parsed.affine, parsed.spatial.length),
    header: parsed.info,
    warnings,
  };
}

async function readFromBytes(
  bytes: Uint8Array,
  file: string,
  maxVoxels: number,
): Promise<RawImage> {
  if (isGzip(bytes)) return readGzip(bytes, file, maxVoxels);
  const parsed = parseHeader(bytes, file, maxVoxels, bytes.length);
  return { parsed, voxels: bytes.subarray(parsed.voxOffset, parsed.voxOffset + parsed.dataBytes) };
}

async function readGzip(gz: Uint8Array, file: string, maxVoxels: number): Promise<RawImage> {
  // the header first (a few KB of input), validated before the whole stream is inflated
  const head = gunzipPrefix(gz, HEADER_PREFIX, file);
  const parsed = parseHeader(head, file, maxVoxels, null);
  const need = parsed.voxOffset + parsed.dataBytes;
  const all = await gunzipLimited(gz, need, file);
  const shown = [...parsed.spatial, parsed.channels].join('×');
  checkSize(file, parsed.voxOffset, parsed.dataBytes, all.length, shown, parsed.dtype);
  return { parsed, voxels: all.subarray(parsed.voxOffset, need) };
}

/** The header bytes of a pair's `.hdr` (raw or gzip). */
function pairHeaderBytes(bytes: Uint8Array, file: string): Uint8Array {
  return isGzip(bytes) ? gunzipPrefix(bytes, HEADER_PREFIX, file) : bytes;
}

/** The voxel bytes of a pair's image file (raw or gzip, inflating only what is needed). */
async function pairVoxels(
  parsed: ParsedHeader,
  img: Uint8Array,
  imgFile: string,
): Promise<Uint8Array> {
  const need = parsed.voxOffset + parsed.dataBytes;
  const all = isGzip(img) ? await gunzipLimited(img, need, imgFile) : img;
  const shown = [...parsed.spatial, parsed.channels].join('×');
  checkSize(imgFile, parsed.voxOffset, parsed.dataBytes, all.length, shown, parsed.dtype);
  return all.subarray(parsed.voxOffset, need);
}

async function readPairFromBytes(
  hdr: Uint8Array,
  img: Uint8Array,
  file: string,
  imgFile: string,
  maxVoxels: number,
): Promise<RawImage> {
  const parsed = parseHeader(pairHeaderBytes(hdr, file), file, maxVoxels, null, true);
  return { parsed, voxels: await pairVoxels(parsed, img, imgFile) };
}

/** The two files of a `.hdr/.img` pair. */
interface PairPaths {
  hdr: string[];
  img: string[];
  /** Which of the two the caller named. */
  given: 'hdr' | 'img';
  /** `x.mat` (SPM's orientation file). */
  mat: string;
}

/** `x.hdr`, `x.img`, `x.hdr.gz`, `x.img.gz` (any case) → the candidate names of both files. */
export function pairPaths(path: string): PairPaths | null {
  const m = /^(.*)\.(hdr|img)(\.gz)?$/i.exec(path);
  if (!m) return null;
  const [, stem, ext, gz = ''] = m as unknown as [string, string, string, string?];
  const upper = ext === ext.toUpperCase();
  const other = ext.toLowerCase() === 'hdr' ? 'img' : 'hdr';
  const otherExt = upper ? other.toUpperCase() : other;
  const altGz = gz ? '' : upper ? '.GZ' : '.gz';
  const given = path;
  const partners = [`${stem}.${otherExt}${gz}`, `${stem}.${otherExt}${altGz}`];
  const mat = `${stem}.${upper ? 'MAT' : 'mat'}`;
  return ext.toLowerCase() === 'hdr'
    ? { hdr: [given], img: partners, given: 'hdr', mat }
    : { hdr: partners, img: [given], given: 'img', mat };
}

type Fs = Awaited<ReturnType<typeof nodeFs>>;

async function firstExisting(fs: Fs, names: string[]): Promise<string | null> {
  for (const n of names) {
    try {
      const st = await fs.stat(n);
      if (st.isFile()) return n;
    } catch {
      // try the next name
    }
  }
  return null;
}

async function readPairFromPaths(
  path: string,
  pair: PairPaths,
  maxVoxels: number,
): Promise<RawImage> {
  const fs = await nodeFs(path);
  const hdrPath = await firstExisting(fs, pair.hdr);
  const imgPath = await firstExisting(fs, pair.img);
  if (!hdrPath || !imgPath) {
    const givenExists = pair.given === 'hdr' ? hdrPath : imgPath;
    if (!givenExists) ioFail(path, 'NOTFOUND', 'no such file');
    const missing = pair.given === 'hdr' ? pair.img : pair.hdr;
    ioFail(
      missing[0]!,
      'NOTFOUND',
      `no such file: the ${pair.given === 'hdr' ? 'image' : 'header'} file of the .hdr/.img pair ${path} is missing (also tried ${missing.slice(1).join(', ')})`,
    );
  }
  const hdrBytes = await withHandle(fs, hdrPath, async (h, size) => {
    const head = new Uint8Array(Math.min(size, HDR_READ_LIMIT));
    await readExactly(h, head, 0, hdrPath);
    return head;
  });
  const parsed = parseHeader(pairHeaderBytes(hdrBytes, hdrPath), hdrPath, maxVoxels, null, true);
  const voxels = await withHandle(fs, imgPath, async (h, size) => {
    const first = new Uint8Array(Math.min(size, 2));
    await readExactly(h, first, 0, imgPath);
    if (isGzip(first)) {
      const gz = new Uint8Array(size);
      await readExactly(h, gz, 0, imgPath);
      return pairVoxels(parsed, gz, imgPath);
    }
    const shown = [...parsed.spatial, parsed.channels].join('×');
    checkSize(imgPath, parsed.voxOffset, parsed.dataBytes, size, shown, parsed.dtype);
    const out = new Uint8Array(parsed.dataBytes);
    await readExactly(h, out, parsed.voxOffset, imgPath);
    return out;
  });
  const warnings: string[] = [];
  if (parsed.format === 'analyze' && (await firstExisting(fs, [pair.mat]))) {
    warnings.push(
      `${hdrPath}: ${pair.mat} (SPM's voxel-to-world matrix) exists but is not read; the affine comes from the Analyze header (nibabel would use the .mat)`,
    );
  }
  return { parsed, voxels, warnings };
}

type Handle = Awaited<ReturnType<Fs['open']>>;

/** Opens `path`, runs `fn` with the handle and the file size, closes; errors name the file. */
async function withHandle<T>(
  fs: Fs,
  path: string,
  fn: (h: Handle, size: number) => Promise<T>,
): Promise<T> {
  let handle: Handle;
  try {
    handle = await fs.open(path, 'r');
  } catch (e) {
    const code = (e as { code?: string }).code;
    ioFail(
      path,
      code === 'ENOENT' ? 'NOTFOUND' : 'IO',
      code === 'ENOENT' ? 'no such file' : `cannot open (${(e as Error).message})`,
    );
  }
  try {
    const { size } = await handle.stat();
    return await fn(handle, size);
  } catch (e) {
    if (e instanceof RegkitIOError) throw e;
    ioFail(path, 'IO', `cannot read (${(e as Error).message})`);
  } finally {
    await handle.close().catch(() => undefined);
  }
}

async function readFromPath(path: string, file: string, maxVoxels: number): Promise<RawImage> {
  const fs = await nodeFs(file);
  return withHandle(fs, path, async (handle, size) => {
    const headLen = Math.min(size, HEADER_PREFIX);
    const head = new Uint8Array(headLen);
    await readExactly(handle, head, 0, file);
    if (isGzip(head)) {
      const gz = new Uint8Array(size);
      await readExactly(handle, gz, 0, file);
      return await readGzip(gz, file, maxVoxels);
    }
    const parsed = parseHeader(head, file, maxVoxels, size);
    const voxels = new Uint8Array(parsed.dataBytes);
    await readExactly(handle, voxels, parsed.voxOffset, file);
    return { parsed, voxels };
  });
}

async function readExactly(
  handle: {
    read: (b: Uint8Array, o: number, l: number, p: number) => Promise<{ bytesRead: number }>;
  },
  into: Uint8Array,
  position: number,
  file: string,
): Promise<void> {
  let off = 0;
  while (off < into.length) {
    const { bytesRead } = await handle.read(into, off, into.length - off, position + off);
    if (bytesRead === 0) {
      ioFail(
        file,
        'SIZE',
        `file ended after ${position + off} bytes (expected ${position + into.length})`,
      );
    }
    off += bytesRead;
  }
}

/** Edge of the square blocks of the transposes in {@link decodeVoxels}. */
const TILE = 32;

/** 2^24: integers beyond it are not all exact in float32. */
const F32_EXACT = 2 ** 24;

/** Rounding of integer voxels to float32: how many values changed and the largest change. */
function precisionLoss(src: NumArray): { lossy: number; maxErr: number; at: number | bigint } {
  let lossy = 0;
  let maxErr = 0;
  let at: number | bigint = 0;
  if (src instanceof BigInt64Array || src instanceof BigUint64Array) {
    const lim = BigInt(F32_EXACT);
    for (let i = 0; i < src.length; i++) {
      const b = src[i]!;
      if (b <= lim && b >= -lim) continue;
      const d = BigInt(Math.fround(Number(b))) - b;
      if (d === 0n) continue;
      lossy++;
      const e = Number(d < 0n ? -d : d);
      if (e > maxErr) {
        maxErr = e;
        at = b;
      }
    }
  } else if (src instanceof Int32Array || src instanceof Uint32Array) {
    for (let i = 0; i < src.length; i++) {
      const x = src[i]!;
      if (x <= F32_EXACT && x >= -F32_EXACT) continue;
      const e = Math.abs(Math.fround(x) - x);
      if (e === 0) continue;
      lossy++;
      if (e > maxErr) {
        maxErr = e;
        at = x;
      }
    }
  }
  return { lossy, maxErr, at };
}

/**
 * Decodes the voxels into float32 in row-major array order `[nx, ny, nz, C]` (from NIfTI's
 * i-fastest storage), applying the scaling. Integer values that float32 rounds are reported
 * in `warnings`.
 * @internal exported for benchmarks only (not part of the package's index)
 */
export function decodeVoxels(
  p: ParsedHeader,
  bytes: Uint8Array,
  file: string,
  warnings: string[],
): Float32Array {
  let src = typedValues(p.dtype, p.info.littleEndian, bytes, p.count);
  const loss = precisionLoss(src);
  if (loss.lossy > 0) {
    const err = loss.maxErr * (p.scaled ? Math.abs(p.slope) : 1);
    warnings.push(
      `${file}: ${loss.lossy.toLocaleString('en-US')} of ${p.count.toLocaleString('en-US')} ${p.dtype.name} values do not survive float32 (integers beyond 2^24 are rounded): max error ${err}${p.scaled ? ' after scaling' : ''}, at stored value ${String(loss.at)}`,
    );
  }
  if (src instanceof BigInt64Array || src instanceof BigUint64Array) {
    const big = src;
    const f = new Float64Array(big.length);
    for (let i = 0; i < big.length; i++) f[i] = Number(big[i]!);
    src = f;
  }
  const s = src as ArrayLike<number>;
  const [nx, ny, nz = 1] = p.spatial as [number, number, number?];
  const nvox = nx * ny * nz;
  const C = p.channels;
  const out = new Float32Array(nvox * C);
  const { slope, inter, scaled } = p;
  const [n4, n5, n6, n7] = p.blocks as [number, number, number, number];
  // Per channel the output is an [nx][M] matrix, M = ny·nz: out[(i·M + m)·C + c] with
  // m = j·nz + k, from storage row (j, k): s[base + nx·(j + ny·k) + i], i fastest. A plain
  // loop strides by M·C on the output side; TILE × TILE blocks of (m, i) stay in cache.
  const M = ny * nz;
  const iStride = M * C;
  for (let c = 0; c < C; c++) {
    // output channel c: C order of dims 4..7; storage block: their Fortran order
    const i7 = c % n7;
    const i6 = Math.floor(c / n7) % n6;
    const i5 = Math.floor(c / (n7 * n6)) % n5;
    const i4 = Math.floor(c / (n7 * n6 * n5));
    const base = nvox * (i4 + n4 * (i5 + n5 * (i6 + n6 * i7)));
    for (let m0 = 0; m0 < M; m0 += TILE) {
      const m1 = Math.min(M, m0 + TILE);
      for (let i0 = 0; i0 < nx; i0 += TILE) {
        const i1 = Math.min(nx, i0 + TILE);
        let j = Math.floor(m0 / nz);
        let k = m0 - j * nz;
        for (let m = m0; m < m1; m++) {
          let si = base + nx * (j + ny * k) + i0;
          let o = i0 * iStride + m * C + c;
          if (scaled) {
            for (let i = i0; i < i1; i++, si++, o += iStride) out[o] = s[si]! * slope + inter;
          } else {
            for (let i = i0; i < i1; i++, si++, o += iStride) out[o] = s[si]!;
          }
          if (++k === nz) {
            k = 0;
            j++;
          }
        }
      }
    }
  }
  return out;
}
