import { withValues } from '@regkit/core';
import { ioFail, RegkitIOError } from './errors.js';
import { decodeMetaData, encodeMetaImage, type MetaHeader, parseMetaHeader } from './metaimage.js';
import { decodeMghData, encodeMgh, MGH_DATA_OFFSET, parseMghHeader } from './mgh.js';
import { decodeNrrdData, encodeNrrd, type NrrdHeader, parseNrrdHeader, skipNrrd } from './nrrd.js';
import {
  baseName,
  gunzipLimited,
  gunzipPrefix,
  gzipBytes,
  gzipBytesSync,
  isGzip,
  nodeFs,
  nodePath,
  writeFileAtomic,
  writeFilesAtomic,
  zlibBytes,
  zlibBytesSync,
} from './platform.js';
import { DEFAULT_MAX_VOXELS, type ReadNiftiOptions, readNifti } from './read.js';
import type { Volume } from './types.js';
import { makeVolume } from './voxels.js';
import {
  checkLevel,
  checkVolume,
  encodeNifti,
  floatValues,
  type NiftiWriteDatatype,
  type VolumeLikeInput,
  writeNifti,
} from './write.js';

/**
 * The image formats regkit reads and writes: `'nifti'` (`.nii`, `.nii.gz`, `.hdr/.img`),
 * `'metaimage'` (`.mha`, `.mhd` + data file), `'nrrd'` (`.nrrd`; `.nhdr` + data file read
 * only) and `'mgh'` (FreeSurfer `.mgh`, `.mgz`).
 */
export type ImageFormat = 'nifti' | 'metaimage' | 'nrrd' | 'mgh';

/** Every file name ending regkit reads as an image (lower case). */
export const IMAGE_EXTENSIONS = [
  '.nii',
  '.nii.gz',
  '.hdr',
  '.img',
  '.hdr.gz',
  '.img.gz',
  '.mha',
  '.mhd',
  '.nrrd',
  '.nhdr',
  '.mgh',
  '.mgz',
] as const;

/** Every file name ending {@link writeVolume} writes (lower case). */
export const WRITABLE_IMAGE_EXTENSIONS = [
  '.nii',
  '.nii.gz',
  '.hdr',
  '.img',
  '.hdr.gz',
  '.img.gz',
  '.mha',
  '.mhd',
  '.nrrd',
  '.mgh',
  '.mgz',
] as const;

/**
 * The format of a file name by its ending (any case), or null.
 *
 * @example
 * ```ts
 * imageFormat('brain.mgz'); // 'mgh'
 * imageFormat('t1.nii.gz'); // 'nifti'
 * ```
 */
export function imageFormat(path: string): ImageFormat | null {
  const p = String(path).toLowerCase();
  if (/\.(nii|hdr|img)(\.gz)?$/.test(p)) return 'nifti';
  if (/\.(mha|mhd)$/.test(p)) return 'metaimage';
  if (/\.(nrrd|nhdr)$/.test(p)) return 'nrrd';
  if (/\.(mgh|mgz)$/.test(p)) return 'mgh';
  return null;
}

/** Options of {@link readVolume}. */
export interface ReadVolumeOptions extends ReadNiftiOptions {
  /** The format of bytes (default: detected from them: gzip/NIfTI/MGH by their first bytes, `NRRD000n`, MetaImage keys). */
  format?: ImageFormat;
  /**
   * The data file's bytes of a `.mhd`/`.nhdr` given as bytes (its `ElementDataFile` /
   * `data file`); named `imageName` in messages (default: the name in the header).
   */
  dataBytes?: Uint8Array;
}

/** Guesses the format of a file's bytes (NIfTI when nothing else fits, so its errors apply). */
function sniffFormat(bytes: Uint8Array, file: string): ImageFormat {
  let head = bytes.subarray(0, 512);
  if (isGzip(bytes)) {
    try {
      head = gunzipPrefix(bytes, 512, file);
    } catch {
      return /\.mgz$/i.test(file) ? 'mgh' : 'nifti';
    }
  }
  const text = String.fromCharCode(...head.subarray(0, 64));
  if (text.startsWith('NRRD000')) return 'nrrd';
  if (/^\s*(ObjectType|NDims)\s*=/i.test(text)) return 'metaimage';
  if (head.length >= 4 && head[0] === 0 && head[1] === 0 && head[2] === 0 && head[3] === 1)
    return 'mgh';
  return 'nifti';
}

/**
 * Reads an image in any format regkit knows ({@link ImageFormat}) into a {@link Volume}:
 * `data` float32 `[1, nx, ny, (nz,) C]`, `affine` voxel → RAS+ mm (as {@link readNifti} and
 * nibabel), `spacing` mm, `header` (`fileFormat` says which format; `affineSource` `'header'`
 * for non-NIfTI files), `warnings`.
 *
 * - NIfTI: {@link readNifti}.
 * - MetaImage/NRRD store ITK's LPS geometry (origin o, spacing s, direction D):
 *   affine = diag(−1, −1, 1)·[D·diag(s) | o]. Channels: MetaImage `ElementNumberOfChannels`
 *   (interleaved); NRRD's one non-spatial axis, first (vector, interleaved) or last (list).
 *   Compressed data (MetaImage `CompressedData` zlib; NRRD `encoding: gzip`) is inflated only
 *   as far as the shape needs. `.mhd`/`.nhdr` read the data file named in the header (next to it).
 * - MGH/MGZ: nibabel's affine (see `parseMghHeader`); frames are channels; big-endian.
 * - Axes as readNifti: spatial axis 0 = the file's fastest axis; `[nx, ny, 1]` with nx, ny > 1
 *   is 2D. Every failure is a {@link RegkitIOError} naming the file, with the same codes as
 *   readNifti (`MAGIC`, `DIMS`, `DATATYPE`, `BUDGET`, `SIZE`, `GZIP`, `AFFINE`, `NOTFOUND`, ...).
 *
 * @param pathOrBytes a path (Node.js; format by extension) or the file's bytes (format from
 *   `opts.format` or detected).
 * @example
 * ```ts
 * const t1 = await readVolume('orig.mgz');
 * const ct = await readVolume('ct.nrrd');
 * t1.affine; // voxel → RAS+ mm
 * ```
 */
export async function readVolume(
  pathOrBytes: string | Uint8Array,
  opts: ReadVolumeOptions = {},
): Promise<Volume> {
  const isPath = typeof pathOrBytes === 'string';
  const file = isPath ? pathOrBytes : (opts.name ?? '<bytes>');
  if (!isPath && !(pathOrBytes instanceof Uint8Array)) {
    ioFail(file, 'OPTION', 'readVolume() needs a path (string) or the file bytes (Uint8Array)');
  }
  const maxVoxels = opts.maxVoxels ?? DEFAULT_MAX_VOXELS;
  if (!(typeof maxVoxels === 'number' && maxVoxels >= 0)) {
    ioFail(file, 'OPTION', `'maxVoxels' must be a non-negative number, got ${String(maxVoxels)}`);
  }
  let format = opts.format;
  if (format !== undefined && !['nifti', 'metaimage', 'nrrd', 'mgh'].includes(format)) {
    ioFail(
      file,
      'OPTION',
      `'format' must be 'nifti', 'metaimage', 'nrrd' or 'mgh', got ${String(format)}`,
    );
  }
  if (isPath) {
    format ??= imageFormat(pathOrBytes) ?? undefined;
    if (!format) {
      ioFail(file, 'PATH', `unknown image file extension (one of ${IMAGE_EXTENSIONS.join(', ')})`);
    }
  }
  if (format === 'nifti') return readNifti(pathOrBytes, opts);
  let bytes: Uint8Array;
  if (isPath) {
    bytes = await readWhole(pathOrBytes);
  } else {
    bytes = pathOrBytes;
    format ??= sniffFormat(bytes, file);
    if (format === 'nifti') return readNifti(bytes, opts);
  }
  const warnings: string[] = [];
  if (format === 'mgh') {
    const head = isGzip(bytes) ? gunzipPrefix(bytes, MGH_DATA_OFFSET, file) : bytes;
    const h = parseMghHeader(head, file, maxVoxels);
    const need = MGH_DATA_OFFSET + h.dataBytes;
    const all = isGzip(bytes) ? await gunzipLimited(bytes, need, file) : bytes;
    const values = decodeMghData(
      h,
      all.subarray(Math.min(all.length, MGH_DATA_OFFSET), need),
      file,
      warnings,
    );
    return makeVolume(
      file,
      values,
      h.spatial,
      h.channels,
      h.affine,
      { format: 'mgh', dtype: h.dtype, littleEndian: false, dataOffset: MGH_DATA_OFFSET },
      warnings,
      opts.allowNonFinite,
    );
  }
  if (format === 'metaimage') {
    const h = parseMetaHeader(bytes, file, maxVoxels);
    let data: Uint8Array;
    let dataName = file;
    if (/^LOCAL$/i.test(h.dataFile)) {
      data = bytes.subarray(h.dataOffset);
    } else {
      const ext = await externalData(file, isPath, h.dataFile, opts.dataBytes, opts.imageName);
      data = ext.bytes;
      dataName = ext.name;
    }
    if (h.compressed) {
      data = await gunzipLimited(
        h.compressedSize !== null ? data.subarray(0, h.compressedSize) : data,
        h.dataBytes,
        dataName,
        'zlib',
      );
    } else if (!/^LOCAL$/i.test(h.dataFile)) {
      data =
        h.headerSize === -1
          ? data.subarray(Math.max(0, data.length - h.dataBytes))
          : data.subarray(Math.min(data.length, h.headerSize));
    }
    const values = decodeMetaData(h, data, dataName, warnings);
    return metaVolume(file, values, h, warnings, opts.allowNonFinite);
  }
  const h = parseNrrdHeader(bytes, file, maxVoxels);
  warnings.push(...h.warnings);
  let data: Uint8Array;
  let dataName = file;
  if (h.dataFile === null) {
    data = bytes.subarray(h.dataOffset);
  } else {
    const ext = await externalData(file, isPath, h.dataFile, opts.dataBytes, opts.imageName);
    data = ext.bytes;
    dataName = ext.name;
  }
  if (h.encoding === 'gzip') {
    // line skip: in the file; byte skip: in the decompressed data (teem's reader)
    data = skipNrrd({ ...h, byteSkip: 0 }, data, dataName);
    const skip = Math.max(0, h.byteSkip);
    data = (await gunzipLimited(data, skip + h.dataBytes, dataName)).subarray(skip);
  } else {
    data = skipNrrd(h, data, dataName);
  }
  const values = decodeNrrdData(h, data, dataName, warnings);
  return nrrdVolume(file, values, h, warnings, opts.allowNonFinite);
}

function metaVolume(
  file: string,
  values: Float32Array,
  h: MetaHeader,
  warnings: string[],
  allowNonFinite: boolean | undefined,
): Volume {
  return makeVolume(
    file,
    values,
    h.spatial,
    h.channels,
    h.affine,
    { format: 'metaimage', dtype: h.dtype, littleEndian: h.littleEndian, dataOffset: h.dataOffset },
    warnings,
    allowNonFinite,
  );
}

function nrrdVolume(
  file: string,
  values: Float32Array,
  h: NrrdHeader,
  warnings: string[],
  allowNonFinite: boolean | undefined,
): Volume {
  return makeVolume(
    file,
    values,
    h.spatial,
    h.channels,
    h.affine,
    { format: 'nrrd', dtype: h.dtype, littleEndian: h.littleEndian, dataOffset: h.dataOffset },
    warnings,
    allowNonFinite,
  );
}

/** The data file of a `.mhd`/`.nhdr`: next to the header (paths), or `dataBytes` (bytes). */
async function externalData(
  file: string,
  isPath: boolean,
  name: string,
  given: Uint8Array | undefined,
  givenName: string | undefined,
): Promise<{ bytes: Uint8Array; name: string }> {
  if (!isPath) {
    if (!(given instanceof Uint8Array)) {
      ioFail(
        file,
        'NOTFOUND',
        `the header names the data file ${JSON.stringify(name)}: pass its bytes as dataBytes`,
      );
    }
    return { bytes: given, name: givenName ?? name };
  }
  const p = await nodePath();
  const path = p.isAbsolute(name) ? name : p.join(p.dirname(file), name);
  try {
    return { bytes: await readWhole(path), name: path };
  } catch (e) {
    if (e instanceof RegkitIOError && e.code === 'NOTFOUND') {
      ioFail(path, 'NOTFOUND', `no such file: the data file of ${file} is missing`);
    }
    throw e;
  }
}

async function readWhole(path: string): Promise<Uint8Array> {
  const fs = await nodeFs(path);
  try {
    const b = await fs.readFile(path);
    return new Uint8Array(b.buffer, b.byteOffset, b.length);
  } catch (e) {
    const code = (e as { code?: string }).code;
    ioFail(
      path,
      code === 'ENOENT' ? 'NOTFOUND' : 'IO',
      code === 'ENOENT' ? 'no such file' : `cannot read (${(e as Error).message})`,
    );
  }
}

/** Options of {@link encodeVolume}. */
export interface EncodeVolumeOptions {
  /** The format (default `'nifti'`). */
  format?: ImageFormat;
  /** On-disk type (default `'float32'`); MGH stores it as `MGH_STORED_AS` says (uint16 → int32, ...). */
  datatype?: NiftiWriteDatatype;
  /**
   * Compress: gzip the whole file for NIfTI (`.nii.gz`) and MGH (`.mgz`); the data block for
   * MetaImage (zlib, `CompressedData = True`) and NRRD (`encoding: gzip`). Default false.
   */
  compress?: boolean;
  /** Compression level 0–9 (default 1). */
  compressionLevel?: number;
}

/** @internal values + geometry of a volume to encode. */
export interface FormatInput {
  values: ArrayLike<number>;
  spatial: number[];
  channels: number;
  affine: number[];
  datatype?: string | undefined;
}

/**
 * @internal The uncompressed single-file bytes of a format (MetaImage `.mha` with
 * `ElementDataFile = LOCAL`), or the compressed ones with `compress` (sync, fflate).
 */
export function encodeFormatSync(
  file: string,
  format: Exclude<ImageFormat, 'nifti'>,
  input: FormatInput,
  compress: boolean,
  level: number,
): Uint8Array {
  if (format === 'mgh') {
    const raw = encodeMgh(file, input);
    return compress ? gzipBytesSync(raw, level) : raw;
  }
  if (format === 'metaimage') {
    const m = encodeMetaImage(file, { ...input, compressed: compress, dataFile: 'LOCAL' });
    const data = compress ? zlibBytesSync(m.data, level) : m.data;
    return concat(m.header(compress ? data.length : undefined), data);
  }
  const n = encodeNrrd(file, input, compress);
  return concat(n.header, compress ? gzipBytesSync(n.data, level) : n.data);
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

/**
 * Encodes a volume as the bytes of one file of `format` (for browsers and downloads):
 * NIfTI as {@link encodeNifti}; MetaImage as a `.mha` (header + data, `ElementDataFile =
 * LOCAL`); NRRD as a `.nrrd` (attached data); MGH as `.mgh` (`.mgz` with `compress`).
 * Geometry: the inverse of {@link readVolume}'s mapping (LPS for MetaImage/NRRD; MGH's
 * delta/Mdc/Pxyz_c, stored as float32). Channels: interleaved (MetaImage/NRRD vector axis),
 * frames (MGH).
 *
 * @example
 * ```ts
 * const bytes = encodeVolume(vol, { format: 'nrrd', compress: true });
 * ```
 */
export function encodeVolume(volume: VolumeLikeInput, opts: EncodeVolumeOptions = {}): Uint8Array {
  const format = opts.format ?? 'nifti';
  const file = `<encodeVolume ${format}>`;
  const level = checkLevel(file, opts.compressionLevel);
  const nifti = {
    ...(opts.datatype ? { datatype: opts.datatype } : {}),
    gzip: !!opts.compress,
    compressionLevel: level,
  };
  if (format === 'nifti') return encodeNifti(volume, nifti);
  if (!['metaimage', 'nrrd', 'mgh'].includes(format)) {
    ioFail(
      file,
      'OPTION',
      `'format' must be 'nifti', 'metaimage', 'nrrd' or 'mgh', got ${String(format)}`,
    );
  }
  const { spatial, channels } = checkVolume(file, 'encodeVolume', volume);
  return withValues(volume.data, (values) =>
    encodeFormatSync(
      file,
      format,
      { values, spatial, channels, affine: volume.affine, datatype: opts.datatype },
      !!opts.compress,
      level,
    ),
  );
}

/** Options of {@link writeVolume}. */
export interface WriteVolumeOptions {
  /** On-disk type (default `'float32'`); see {@link EncodeVolumeOptions.datatype}. */
  datatype?: NiftiWriteDatatype;
  /** Compress the data of `.mha`/`.mhd`/`.nrrd` (default false; `.nii.gz`, `.mgz` are always compressed, `.nii`, `.mgh` never). */
  compress?: boolean;
  /** Compression level 0–9 (default 1). */
  compressionLevel?: number;
  /** Replace existing files (default true); false throws `EXISTS`. */
  overwrite?: boolean;
}

/**
 * Writes a volume in the format of its file name ending ({@link WRITABLE_IMAGE_EXTENSIONS}):
 * NIfTI as {@link writeNifti}; `.mha` (one file), `.mhd` (header + `<name>.raw`, or `.zraw`
 * with `compress`), `.nrrd` (attached data), `.mgh`, `.mgz` (gzip). Files go to temporaries
 * first and are renamed when all are written (the `.mhd` header last).
 *
 * @example
 * ```ts
 * await writeVolume('warped.mha', volumeLike(fixed, warped));
 * await writeVolume('labels.mgz', labels, { datatype: 'int32' });
 * ```
 */
export async function writeVolume(
  path: string,
  volume: VolumeLikeInput,
  opts: WriteVolumeOptions = {},
): Promise<void> {
  if (typeof path !== 'string') ioFail(String(path), 'OPTION', "'path' must be a string");
  const lower = path.toLowerCase();
  const format = imageFormat(path);
  if (!format || lower.endsWith('.nhdr')) {
    ioFail(path, 'PATH', `the file name must end with ${WRITABLE_IMAGE_EXTENSIONS.join(', ')}`);
  }
  const overwrite = opts.overwrite ?? true;
  if (format === 'nifti') {
    const o = {
      ...(opts.datatype ? { datatype: opts.datatype } : {}),
      ...(opts.compressionLevel !== undefined ? { compressionLevel: opts.compressionLevel } : {}),
      overwrite,
    };
    return writeNifti(path, volume, o);
  }
  const { spatial, channels } = checkVolume(path, 'writeVolume', volume);
  const level = checkLevel(path, opts.compressionLevel);
  const values = await floatValues(volume.data);
  const input: FormatInput = {
    values,
    spatial,
    channels,
    affine: volume.affine,
    datatype: opts.datatype,
  };
  if (format === 'mgh') {
    const raw = encodeMgh(path, input);
    await writeFileAtomic(
      path,
      lower.endsWith('.mgz') ? await gzipBytes(raw, level) : raw,
      overwrite,
    );
    return;
  }
  const compress = !!opts.compress;
  if (format === 'nrrd') {
    const n = encodeNrrd(path, input, compress);
    await writeFileAtomic(
      path,
      concat(n.header, compress ? await gzipBytes(n.data, level) : n.data),
      overwrite,
    );
    return;
  }
  if (lower.endsWith('.mha')) {
    const m = encodeMetaImage(path, { ...input, compressed: compress, dataFile: 'LOCAL' });
    const data = compress ? await zlibBytes(m.data, level) : m.data;
    await writeFileAtomic(
      path,
      concat(m.header(compress ? data.length : undefined), data),
      overwrite,
    );
    return;
  }
  const dataPath = path.replace(/\.mhd$/i, compress ? '.zraw' : '.raw');
  const m = encodeMetaImage(path, { ...input, compressed: compress, dataFile: baseName(dataPath) });
  const data = compress ? await zlibBytes(m.data, level) : m.data;
  await writeFilesAtomic(
    [
      { path: dataPath, bytes: data },
      { path, bytes: m.header(compress ? data.length : undefined) },
    ],
    overwrite,
  );
}
