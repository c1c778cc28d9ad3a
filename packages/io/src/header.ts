import { NIFTI1, NIFTI2 } from 'nifti-reader-js';
import { ioFail } from './errors.js';
import { columnNorms, quatToMatrix } from './matrix.js';
import type { NiftiHeaderInfo } from './types.js';

/** A NIfTI datatype regkit reads. */
export interface DatatypeInfo {
  code: number;
  name: string;
  bytes: number;
}

/** Datatypes read (all) and written (all but 64-bit integers). */
export const DATATYPES: readonly DatatypeInfo[] = [
  { code: 2, name: 'uint8', bytes: 1 },
  { code: 4, name: 'int16', bytes: 2 },
  { code: 8, name: 'int32', bytes: 4 },
  { code: 16, name: 'float32', bytes: 4 },
  { code: 64, name: 'float64', bytes: 8 },
  { code: 256, name: 'int8', bytes: 1 },
  { code: 512, name: 'uint16', bytes: 2 },
  { code: 768, name: 'uint32', bytes: 4 },
  { code: 1024, name: 'int64', bytes: 8 },
  { code: 1280, name: 'uint64', bytes: 8 },
];

const UNSUPPORTED: Record<number, string> = {
  0: 'none',
  1: 'binary',
  32: 'complex64',
  128: 'rgb24',
  1536: 'float128',
  1792: 'complex128',
  2048: 'complex256',
  2304: 'rgba32',
};

export function datatypeByCode(code: number): DatatypeInfo | undefined {
  return DATATYPES.find((d) => d.code === code);
}

export function datatypeByName(name: string): DatatypeInfo | undefined {
  return DATATYPES.find((d) => d.name === name);
}

/** How the voxels are stored: single `.nii`, NIfTI `.hdr/.img` pair, or Analyze 7.5 pair. */
export type FileFormat = 'nifti' | 'nifti-pair' | 'analyze';

/** Everything readNifti needs from a header, validated. */
export interface ParsedHeader {
  info: NiftiHeaderInfo;
  format: FileFormat;
  dtype: DatatypeInfo;
  headerSize: number;
  /** Spatial shape in array order (2 or 3 axes). */
  spatial: number[];
  /** dim[4], dim[5] (time, vector components). */
  nt: number;
  nv: number;
  /** dim[4..7] (1 beyond dim[0]); channel c is their C-order index, storage their Fortran order. */
  blocks: number[];
  channels: number;
  /** Number of values (voxels × channels). */
  count: number;
  /** Bytes of voxel data. */
  dataBytes: number;
  voxOffset: number;
  affine: number[];
  slope: number;
  inter: number;
  scaled: boolean;
  /** Problems that did not stop reading (bad pixdim, ...), each starting with the file name. */
  warnings: string[];
}

function str(bytes: Uint8Array, start: number, end: number): string {
  let s = '';
  for (let i = start; i < end && i < bytes.length; i++) {
    const c = bytes[i]!;
    if (c === 0) break;
    s += String.fromCharCode(c);
  }
  return s;
}

const fmtInt = (n: number) => n.toLocaleString('en-US');

/**
 * Reads the NIfTI version and byte order from the first bytes; null when the bytes are not
 * a NIfTI header (`sizeof_hdr` neither 348 nor 540 in either byte order).
 */
function sniff(head: Uint8Array): { version: 1 | 2; littleEndian: boolean } | null {
  if (head.length < 4) return null;
  const dv = new DataView(head.buffer, head.byteOffset, head.length);
  const le = dv.getInt32(0, true);
  const be = dv.getInt32(0, false);
  if (le === 348) return { version: 1, littleEndian: true };
  if (be === 348) return { version: 1, littleEndian: false };
  if (le === 540) return { version: 2, littleEndian: true };
  if (be === 540) return { version: 2, littleEndian: false };
  return null;
}

/** The smallest prefix that holds the header of either version. */
export const HEADER_PREFIX = 544;

/**
 * Parses and validates a NIfTI-1/2 header (nifti-reader-js for the fields; the affine as
 * nibabel computes it) before anything large is allocated.
 *
 * @param head at least the header bytes (348 or 540).
 * @param totalBytes the size of the whole (decompressed, when known) file — for a pair, of
 *   the image file — or null for gzip streams whose size is found later.
 * @param pair the header of a `.hdr/.img` pair (magic `ni1`/`ni2`, or none: Analyze 7.5);
 *   `vox_offset` is then the offset in the image file.
 */
export function parseHeader(
  head: Uint8Array,
  file: string,
  maxVoxels: number,
  totalBytes: number | null,
  pair = false,
): ParsedHeader {
  const warnings: string[] = [];
  if (head.length < 348) {
    ioFail(
      file,
      'SIZE',
      `${head.length} bytes: too short for a NIfTI header (at least 348 bytes needed)`,
    );
  }
  const v = sniff(head);
  if (!v) {
    ioFail(
      file,
      'MAGIC',
      'not a NIfTI file (sizeof_hdr is neither 348 nor 540; gzip-compressed files must start with 1f 8b)',
    );
  }
  const headerSize = v.version === 1 ? 348 : 540;
  if (head.length < headerSize) {
    ioFail(file, 'SIZE', `${head.length} bytes: too short for a NIfTI-2 header (540 bytes)`);
  }
  let format: FileFormat = pair ? 'nifti-pair' : 'nifti';
  if (v.version === 1) {
    const magic = str(head, 344, 348);
    if (pair) {
      if (magic !== 'ni1' && magic !== 'n+1') format = 'analyze';
    } else if (magic === 'ni1') {
      ioFail(
        file,
        'MAGIC',
        "magic 'ni1': the header of a .hdr/.img pair; read it by its .hdr or .img path (or pass the image file's bytes as imageBytes)",
      );
    } else if (magic !== 'n+1') {
      ioFail(
        file,
        'MAGIC',
        `bad NIfTI-1 magic ${JSON.stringify(magic)} (expected 'n+1'; an Analyze 7.5 .hdr/.img pair is read by its .hdr or .img path)`,
      );
    }
  } else {
    const m = head.subarray(4, 12);
    const ok = [0x6e, 0x2b, 0x32, 0, 0x0d, 0x0a, 0x1a, 0x0a].every((b, i) => m[i] === b);
    const single = str(head, 4, 8);
    if (pair ? single !== 'ni2' && !ok : !ok) {
      if (single === 'ni2') {
        ioFail(
          file,
          'MAGIC',
          "magic 'ni2': the header of a .hdr/.img pair; read it by its .hdr or .img path (or pass imageBytes)",
        );
      }
      ioFail(
        file,
        'MAGIC',
        `bad NIfTI-2 magic ${JSON.stringify(single)} (expected ${pair ? "'ni2'" : "'n+2'"})`,
      );
    }
  }
  const analyze = format === 'analyze';

  // Header fields by nifti-reader-js, on a copy of exactly the header (no extension parsing).
  const copy = head.slice(0, headerSize).buffer;
  let h: NIFTI1 | NIFTI2;
  try {
    h = v.version === 1 ? new NIFTI1() : new NIFTI2();
    h.readHeader(copy);
  } catch (e) {
    ioFail(file, 'MAGIC', `unreadable NIfTI header (${(e as Error).message})`);
  }
  const dv = new DataView(head.buffer, head.byteOffset, head.length);
  const le = v.littleEndian;

  // --- dims ---
  const dims = h.dims.slice(0, 8).map(Number);
  const ndim = dims[0]!;
  if (!Number.isInteger(ndim) || ndim < 1 || ndim > 7) {
    ioFail(file, 'DIMS', `dim[0] = ${ndim}: the number of dimensions must be 1 to 7`);
  }
  const d = (i: number) => (i <= ndim ? dims[i]! : 1);
  for (let i = 1; i <= ndim; i++) {
    const di = dims[i]!;
    if (!Number.isSafeInteger(di) || di < 1) {
      ioFail(
        file,
        'DIMS',
        `dim[${i}] = ${di}: every dimension must be ≥ 1 (dim = ${fmtDims(dims)})`,
      );
    }
  }
  const nx = d(1);
  const ny = d(2);
  const nz = d(3);
  const nt = d(4);
  const nv = d(5);
  const blocks = [nt, nv, d(6), d(7)];
  const channels = blocks.reduce((a, b) => a * b, 1);
  const count = nx * ny * nz * channels;
  const shown = [nx, ny, nz, ...blocks].slice(0, Math.max(ndim, 1)).join('×');
  if (!Number.isSafeInteger(count) || count > maxVoxels) {
    ioFail(
      file,
      'BUDGET',
      `dims ${shown} = ${fmtInt(count)} values exceed the budget maxVoxels = ${fmtInt(maxVoxels)} (raise maxVoxels to read it)`,
    );
  }

  // --- datatype ---
  const code = h.datatypeCode;
  const dtype = datatypeByCode(code);
  if (!dtype) {
    const known = UNSUPPORTED[code];
    ioFail(
      file,
      'DATATYPE',
      `unsupported datatype code ${code}${known ? ` (${known})` : ''}; supported: ${DATATYPES.map((t) => `${t.name} (${t.code})`).join(', ')}`,
    );
  }

  // --- vox_offset ---
  let voxOffset = Number(h.vox_offset);
  const minOffset = pair ? 0 : headerSize + 4;
  if (voxOffset === 0) voxOffset = minOffset;
  if (!Number.isFinite(voxOffset) || !Number.isInteger(voxOffset) || voxOffset < minOffset) {
    ioFail(
      file,
      'OFFSET',
      pair
        ? `vox_offset = ${h.vox_offset}: must be an integer ≥ 0 (the byte offset in the image file)`
        : `vox_offset = ${h.vox_offset}: must be an integer ≥ ${minOffset} for a single-file NIfTI-${v.version}`,
    );
  }
  const dataBytes = count * dtype.bytes;
  if (totalBytes !== null) checkSize(file, voxOffset, dataBytes, totalBytes, shown, dtype);

  // --- scaling (nibabel: slope 0 or non-finite → no scaling; then inter must be finite) ---
  const rawSlope = Number(h.scl_slope);
  const rawInter = Number(h.scl_inter);
  let slope = 1;
  let inter = 0;
  let scaled = false;
  if (analyze) {
    // nibabel Spm2AnalyzeHeader.get_slope_inter (SPM2 spm_vol_ana.m): funused1 = slope,
    // funused2 = intercept (non-finite → 0); else from the glmax/glmin and cal_max/cal_min ranges
    let s = Number.NaN;
    let i = 0;
    if (rawSlope !== 0 && Number.isFinite(rawSlope)) {
      s = rawSlope;
      i = Number.isFinite(rawInter) ? rawInter : 0;
    } else {
      const glRange = dv.getInt32(140, le) - dv.getInt32(144, le);
      const calMin = dv.getFloat32(128, le);
      const calRange = Math.fround(dv.getFloat32(124, le) - calMin);
      if (glRange !== 0 && calRange !== 0) {
        s = calRange / glRange;
        i = calMin - s * dv.getInt32(144, le);
      }
    }
    if (Number.isFinite(s) && Number.isFinite(i) && s !== 0) {
      slope = s;
      inter = i;
      scaled = slope !== 1 || inter !== 0;
    }
  } else if (rawSlope !== 0 && Number.isFinite(rawSlope)) {
    if (!Number.isFinite(rawInter)) {
      ioFail(file, 'SCALE', `scl_slope = ${rawSlope} but scl_inter = ${rawInter} is not finite`);
    }
    slope = rawSlope;
    inter = rawInter;
    scaled = slope !== 1 || inter !== 0;
  }

  // --- affine (nibabel get_best_affine, after nibabel's header fixes) ---
  const pixdim = h.pixDims.slice(0, 8).map(Number);
  const fixCode = (c: number) => (Number.isInteger(c) && c >= 0 && c <= 5 && !analyze ? c : 0);
  const qformCode = fixCode(h.qform_code);
  const sformCode = fixCode(h.sform_code);
  let sform: number[] | null = null;
  if (sformCode > 0) {
    const s: number[] = [];
    for (let i = 0; i < 12; i++) {
      s.push(v.version === 1 ? dv.getFloat32(280 + 4 * i, le) : dv.getFloat64(400 + 8 * i, le));
    }
    sform = [...s, 0, 0, 0, 1];
  }
  // voxel sizes: nibabel's header fixes |pixdim| and 0 → 1; non-finite → 1 as well (ours)
  const zooms = [1, 2, 3].map((i) => fixZoom(pixdim[i] ?? 1));
  const badPixdim = [1, 2, 3]
    .filter((i) => i <= ndim && !(Number(pixdim[i]) > 0 && Number.isFinite(pixdim[i])))
    .map((i) => `pixdim[${i}] = ${pixdim[i]}`);
  let qform: number[] | null = null;
  if (qformCode > 0) {
    qform = qformAffine(file, h, zooms, pixdim[0]!);
  }
  let affine: number[];
  let affineSource: NiftiHeaderInfo['affineSource'];
  if (sform) {
    affine = sform;
    affineSource = 'sform';
  } else if (qform) {
    affine = qform;
    affineSource = 'qform';
  } else if (analyze) {
    affine = spmOriginAffine(
      dims,
      zooms,
      [253, 255, 257].map((o) => dv.getInt16(o, le)),
    );
    affineSource = 'pixdim';
  } else {
    affine = baseAffine(
      [nx, ny, nz].slice(0, Math.min(3, ndim)),
      zooms.slice(0, Math.min(3, ndim)),
    );
    affineSource = 'pixdim';
  }
  if (!affine.every(Number.isFinite)) {
    ioFail(
      file,
      'AFFINE',
      `the ${affineSource} affine has non-finite entries (${affine.join(', ')})`,
    );
  }
  if (columnNorms(affine, 3).some((n) => n === 0)) {
    ioFail(file, 'AFFINE', `the ${affineSource} affine has a zero column (${affine.join(', ')})`);
  }

  if (badPixdim.length > 0) {
    warnings.push(
      `${file}: invalid voxel size ${badPixdim.join(', ')} (must be finite and > 0); ${
        affineSource === 'sform'
          ? 'not used: the affine comes from the sform'
          : `used |pixdim| for negative and 1 for zero or non-finite values in the ${affineSource} affine (voxel sizes ${zooms.join(', ')})`
      }`,
    );
  }

  // 2D only for a real plane (dim[3] = 1, dim[1] and dim[2] > 1): 1×1×1, n×1×1, ... stay 3D
  const spatial = nz === 1 && nx > 1 && ny > 1 ? [nx, ny] : [nx, ny, nz];
  const info: NiftiHeaderInfo = {
    version: v.version,
    datatype: dtype.name,
    datatypeCode: dtype.code,
    dims,
    pixdim,
    sclSlope: rawSlope,
    sclInter: rawInter,
    qformCode,
    sformCode,
    intentCode: analyze ? 0 : Number(h.intent_code),
    intentName: analyze ? '' : (h.intent_name ?? ''),
    description: h.description ?? '',
    xyztUnits: analyze ? 2 : Number(h.xyzt_units),
    littleEndian: le,
    voxOffset,
    calMin: Number(h.cal_min),
    calMax: Number(h.cal_max),
    qform,
    sform,
    affineSource,
    fileFormat: format,
  };
  return {
    info,
    format,
    dtype,
    headerSize,
    spatial,
    nt,
    nv,
    blocks,
    channels,
    count,
    dataBytes,
    voxOffset,
    affine,
    slope,
    inter,
    scaled,
    warnings,
  };
}

/** A voxel size as nibabel's header checks fix it: |pixdim|, 0 → 1 (and non-finite → 1). */
function fixZoom(p: number): number {
  const z = Math.abs(p);
  return z === 0 || !Number.isFinite(z) ? 1 : z;
}

/**
 * nibabel `Spm99AnalyzeHeader.get_origin_affine` (what `nib.load` gives for an Analyze 7.5
 * pair, read as SPM2 Analyze): diag(−zx, zy, zz) with the translation from the SPM `origin`
 * field (1-based voxel, int16 at bytes 253–258) when set and plausible (−dim < origin <
 * 2·dim), else from the centre of the image, as `get_base_affine`.
 */
function spmOriginAffine(dims: number[], zooms: number[], origin: number[]): number[] {
  const z = [-zooms[0]!, zooms[1]!, zooms[2]!];
  const d = [dims[1]!, dims[2]!, dims[3]!];
  const use = origin.some((o) => o !== 0) && origin.every((o, i) => o > -d[i]! && o < 2 * d[i]!);
  const o = use ? origin.map((x) => x - 1) : d.map((n) => (n - 1) / 2);
  return [
    z[0]!,
    0,
    0,
    -o[0]! * z[0]!,
    0,
    z[1]!,
    0,
    -o[1]! * z[1]!,
    0,
    0,
    z[2]!,
    -o[2]! * z[2]!,
    0,
    0,
    0,
    1,
  ];
}

/** Throws SIZE when the file is shorter than vox_offset + the voxel data. */
export function checkSize(
  file: string,
  voxOffset: number,
  dataBytes: number,
  totalBytes: number,
  shown: string,
  dtype: DatatypeInfo,
): void {
  const avail = totalBytes - voxOffset;
  if (avail < dataBytes) {
    ioFail(
      file,
      'SIZE',
      `truncated: dims ${shown} × ${dtype.bytes} bytes (${dtype.name}) need ${fmtInt(dataBytes)} bytes of voxel data after vox_offset ${voxOffset}, but the file has ${fmtInt(Math.max(0, avail))}`,
    );
  }
}

function fmtDims(dims: number[]): string {
  return `[${dims.join(', ')}]`;
}

/** nibabel `get_qform`: quaternion (w ≥ 0 from b, c, d), pixdim zooms and qfac, qoffset. */
function qformAffine(file: string, h: NIFTI1 | NIFTI2, zooms: number[], qfacRaw: number): number[] {
  const b = Number(h.quatern_b);
  const c = Number(h.quatern_c);
  const dq = Number(h.quatern_d);
  const w2 = 1 - (b * b + c * c + dq * dq);
  let w: number;
  if (w2 < 0) {
    // nibabel's threshold for float32 quaternions: -3 eps(float32)
    if (w2 < -3 * 1.1920929e-7 || !Number.isFinite(w2)) {
      ioFail(file, 'AFFINE', `invalid qform quaternion (b² + c² + d² = ${1 - w2} > 1)`);
    }
    w = 0;
  } else {
    w = Math.sqrt(w2);
  }
  if (!Number.isFinite(w)) {
    ioFail(file, 'AFFINE', `invalid qform quaternion (b, c, d = ${b}, ${c}, ${dq})`);
  }
  const r = quatToMatrix(w, b, c, dq);
  // nibabel fixes on load: |pixdim|, 0 → 1; qfac ∉ {-1, 1} → 1
  const vox = [...zooms];
  const qfac = qfacRaw === -1 ? -1 : 1;
  vox[2]! *= qfac;
  const q = Number(h.qoffset_x);
  const qy = Number(h.qoffset_y);
  const qz = Number(h.qoffset_z);
  return [
    r[0]![0]! * vox[0]!,
    r[0]![1]! * vox[1]!,
    r[0]![2]! * vox[2]!,
    q,
    r[1]![0]! * vox[0]!,
    r[1]![1]! * vox[1]!,
    r[1]![2]! * vox[2]!,
    qy,
    r[2]![0]! * vox[0]!,
    r[2]![1]! * vox[1]!,
    r[2]![2]! * vox[2]!,
    qz,
    0,
    0,
    0,
    1,
  ];
}

/**
 * nibabel `get_base_affine` (no sform or qform): `shape_zoom_affine(shape, zooms, x_flip=True)`,
 * i.e. diag(−zx, zy, zz) with the origin at the centre of the image.
 */
function baseAffine(shape: number[], zooms: number[]): number[] {
  const s = [1, 1, 1];
  const z = [1, 1, 1];
  shape.forEach((v, i) => {
    s[i] = v;
  });
  zooms.forEach((v, i) => {
    z[i] = v;
  });
  z[0] = -z[0]!;
  const t = s.map((n, i) => (-(n - 1) / 2) * z[i]!);
  return [z[0]!, 0, 0, t[0]!, 0, z[1]!, 0, t[1]!, 0, 0, z[2]!, t[2]!, 0, 0, 0, 1];
}
