import { tf, withValues } from '@regkit/core';
import { ioFail } from './errors.js';
import { encodeFormatSync, imageFormat, readVolume } from './formats.js';
import { invert } from './matrix.js';
import { gzipBytes, gzipBytesSync, writeFileAtomic } from './platform.js';
import type { ReadNiftiOptions } from './read.js';
import type { Volume } from './types.js';
import { checkVolumeArg } from './volume.js';
import {
  checkLevel,
  encodeRaw,
  encodeRawChunks,
  floatValues,
  gzipFromPath,
  type ValuesSource,
} from './write.js';

/** The field's format by its path: NIfTI, MetaImage (`.mha`) or NRRD (`.nrrd`); else `PATH`. */
function fieldFormat(path: string): 'nifti' | 'metaimage' | 'nrrd' {
  const f = typeof path === 'string' ? imageFormat(path) : null;
  const lower = typeof path === 'string' ? path.toLowerCase() : '';
  if (f === 'nifti' && /\.nii(\.gz)?$/.test(lower)) return 'nifti';
  if (f === 'metaimage' && lower.endsWith('.mha')) return 'metaimage';
  if (f === 'nrrd' && lower.endsWith('.nrrd')) return 'nrrd';
  if (f === 'mgh') {
    ioFail(
      path,
      'PATH',
      'MGH/MGZ has no displacement-field convention: write the field as .nii.gz, .mha or .nrrd',
    );
  }
  gzipFromPath(path); // PATH error for other endings
  return 'nifti';
}

/**
 * A field as an ITK vector image in MetaImage/NRRD: float32, `ndim` interleaved components
 * d_LPS = M·u_vox ({@link itkFieldMatrix}), the reference's geometry.
 */
function encodeItkVectorImage(
  file: string,
  format: 'metaimage' | 'nrrd',
  values: ArrayLike<number>,
  reference: Volume,
  spatial: number[],
  compress: boolean,
  level: number,
): Uint8Array {
  const nd = spatial.length;
  const mixed = applyMatrix(values, itkFieldMatrix(reference.affine, nd), nd);
  return encodeFormatSync(
    file,
    format,
    { values: mixed, spatial, channels: nd, affine: reference.affine, datatype: 'float32' },
    compress,
    level,
  );
}

/** NIfTI intent code of vector images (ITK/ANTs displacement fields). */
export const NIFTI_INTENT_VECTOR = 1007;

/** Options of {@link writeDisplacementField}. */
export interface WriteFieldOptions {
  /** Replace an existing file (default true); false throws `EXISTS` when it exists. */
  overwrite?: boolean;
  /** gzip level 0–9 for `.nii.gz` (default 1, as nibabel: ~4× faster than 6 on images, files ~20% larger). */
  compressionLevel?: number;
  /** Compress the data of a `.mha` (zlib) or `.nrrd` (gzip) field (default false). */
  compress?: boolean;
}

/** Options of {@link readDisplacementField}. */
export type ReadFieldOptions = Pick<ReadNiftiOptions, 'maxVoxels' | 'name'> & {
  /** The format of bytes (default: detected); paths go by their extension. */
  format?: 'nifti' | 'metaimage' | 'nrrd';
};

/**
 * The matrix M with d_ITK = M · u_vox: M = diag(−1, −1, 1) · A₃ in 3D (A₃ = the upper-left
 * 3×3 of the voxel → RAS affine; ITK vectors are LPS millimetres), M = −A₂ in 2D (the
 * in-plane 2×2 block; ITK's 2D physical axes are LPS x, y).
 */
export function itkFieldMatrix(affine: readonly number[], nd: number): number[][] {
  const flip = [-1, -1, 1];
  return Array.from({ length: nd }, (_, i) =>
    Array.from({ length: nd }, (_, j) => flip[i]! * affine[i * 4 + j]!),
  );
}

function checkField(fn: string, file: string, field: unknown, spatial: number[]): tf.Tensor {
  const nd = spatial.length;
  const want = [1, ...spatial, nd];
  if (!(field instanceof tf.Tensor) || field.isDisposed) {
    ioFail(file, 'OPTION', `${fn}(): 'field' must be a live tf.Tensor`);
  }
  if (!tf.util.arraysEqual(field.shape, want)) {
    ioFail(
      file,
      'SHAPE',
      `${fn}(): 'field' [${field.shape.join(', ')}] must be [${want.join(', ')}] (a ${nd}D displacement field on the reference grid, voxel units)`,
    );
  }
  return field;
}

function applyMatrix(values: ArrayLike<number>, m: number[][], nd: number): Float32Array {
  const out = new Float32Array(values.length);
  if (nd === 3) {
    const [r0, r1, r2] = m as [number[], number[], number[]];
    for (let i = 0; i < values.length; i += 3) {
      const a = values[i]!;
      const b = values[i + 1]!;
      const c = values[i + 2]!;
      out[i] = r0[0]! * a + r0[1]! * b + r0[2]! * c;
      out[i + 1] = r1[0]! * a + r1[1]! * b + r1[2]! * c;
      out[i + 2] = r2[0]! * a + r2[1]! * b + r2[2]! * c;
    }
  } else {
    const [r0, r1] = m as [number[], number[]];
    for (let i = 0; i < values.length; i += 2) {
      const a = values[i]!;
      const b = values[i + 1]!;
      out[i] = r0[0]! * a + r0[1]! * b;
      out[i + 1] = r1[0]! * a + r1[1]! * b;
    }
  }
  return out;
}

function fieldInput(values: ValuesSource, reference: Volume, spatial: number[]) {
  const nd = spatial.length;
  // the LPS-mm mixing is applied while storing (no mixed copy of the field)
  return {
    values,
    mix: itkFieldMatrix(reference.affine, nd),
    spatial,
    channels: nd,
    affine: reference.affine,
    header: reference.header,
    layout: 'vector' as const,
    intentCode: NIFTI_INTENT_VECTOR,
  };
}

const FIELD_ENCODING = {
  datatype: 'float32',
  description: 'displacement field, ITK convention (LPS mm)',
} as const;

/**
 * The uncompressed NIfTI bytes of {@link encodeDisplacementField} in pieces of about 4 MiB
 * (the header, then whole planes), each read in place from `field` when it is taken: a 3D
 * field is written (or gzip-streamed) without a copy of the file in memory. `field` must
 * stay alive, and no tfjs op may run between taking a piece and using it. Concatenated, the
 * pieces equal `encodeDisplacementField(field, reference)`.
 * @param field `[1, ...spatial, ndim]` in voxels on the reference grid.
 * @param chunkBytes voxel bytes per piece (default 4 MiB; at least one plane).
 * @returns the total size in bytes and a generator of the pieces.
 */
export function encodeDisplacementFieldChunks(
  field: tf.Tensor,
  reference: Volume,
  chunkBytes = 1 << 22,
): { bytes: number; chunks: () => Generator<Uint8Array> } {
  const fn = 'encodeDisplacementFieldChunks';
  const file = `<${fn}>`;
  const spatial = checkVolumeArg(fn, 'reference', reference);
  checkField(fn, file, field, spatial);
  const values: ValuesSource = { read: (f) => withValues(field, f) };
  return encodeRawChunks(file, fieldInput(values, reference, spatial), FIELD_ENCODING, chunkBytes);
}

function encodeField(
  file: string,
  values: ArrayLike<number>,
  reference: Volume,
  spatial: number[],
): Uint8Array {
  return encodeRaw(file, fieldInput(values, reference, spatial), FIELD_ENCODING);
}

/**
 * Writes a displacement field as an ITK/ANTs displacement field (readable by ANTs
 * `antsApplyTransforms`, ITK `DisplacementFieldTransform`, elastix/transformix,
 * SimpleITK): a 5D float32 NIfTI with `dim = [5, nx, ny, nz, 1, ndim]` (nz = 1 in 2D),
 * `intent_code` 1007 (vector), the reference's affine, and vectors in physical millimetres,
 * LPS: d_LPS = diag(−1, −1, 1) · A₃ · u_vox with A₃ the upper-left 3×3 of the reference's
 * voxel → RAS affine (2D: d = −A₂ · u). Like ITK, the field maps reference (fixed) points to
 * where the moving image is sampled, the direction of regkit's `warp`.
 *
 * `.mha` and `.nrrd` paths write the same vectors as an ITK vector image (MetaImage
 * `ElementNumberOfChannels = ndim`; NRRD `kinds: vector domain ...`), float32, the
 * reference's geometry in LPS, as ITK writes displacement fields in those formats.
 *
 * @param path `.nii`, `.nii.gz`, `.mha` or `.nrrd` (any case).
 * @param field `[1, ...spatial, ndim]` in voxels on the reference grid (component k along axis k).
 */
export async function writeDisplacementField(
  path: string,
  field: tf.Tensor,
  reference: Volume,
  opts: WriteFieldOptions = {},
): Promise<void> {
  const fn = 'writeDisplacementField';
  const format = fieldFormat(path);
  const gz = format === 'nifti' && gzipFromPath(path);
  const spatial = checkVolumeArg(fn, 'reference', reference);
  checkField(fn, path, field, spatial);
  const level = checkLevel(path, opts.compressionLevel);
  if (format !== 'nifti') {
    const values = await floatValues(field);
    const bytes = encodeItkVectorImage(
      path,
      format,
      values,
      reference,
      spatial,
      !!opts.compress,
      level,
    );
    await writeFileAtomic(path, bytes, opts.overwrite ?? true);
    return;
  }
  const raw = encodeField(path, await floatValues(field), reference, spatial);
  const bytes = gz ? await gzipBytes(raw, level) : raw;
  await writeFileAtomic(path, bytes, opts.overwrite ?? true);
}

/**
 * The bytes {@link writeDisplacementField} writes (synchronous, for browsers).
 */
export function encodeDisplacementField(
  field: tf.Tensor,
  reference: Volume,
  opts: { gzip?: boolean; compressionLevel?: number; format?: 'nifti' | 'metaimage' | 'nrrd' } = {},
): Uint8Array {
  const fn = 'encodeDisplacementField';
  const file = `<${fn}>`;
  const spatial = checkVolumeArg(fn, 'reference', reference);
  checkField(fn, file, field, spatial);
  const format = opts.format ?? 'nifti';
  if (format === 'metaimage' || format === 'nrrd') {
    const level = checkLevel(file, opts.compressionLevel);
    return withValues(field, (values) =>
      encodeItkVectorImage(file, format, values, reference, spatial, !!opts.gzip, level),
    );
  }
  if (format !== 'nifti') {
    ioFail(
      file,
      'OPTION',
      `'format' must be 'nifti', 'metaimage' or 'nrrd', got ${String(format)}`,
    );
  }
  // read in place (no copy of the field on wasm/cpu): encodeField is synchronous
  const raw = withValues(field, (values) => encodeField(file, values, reference, spatial));
  return opts.gzip ? gzipBytesSync(raw, checkLevel(file, opts.compressionLevel)) : raw;
}

/**
 * Reads an ITK/ANTs displacement field (see {@link writeDisplacementField}) back into voxel
 * units on the reference's grid: u_vox = A₃⁻¹ · diag(−1, −1, 1) · d_LPS. Throws
 * `DIMS` when the file is not laid out as `[5, nx, ny, nz, 1, ndim]`, `SHAPE` when its grid
 * size differs from the reference's and `GRID` when its affine does (beyond float32
 * rounding: |Δ| ≤ 1e-5·(1 + |a|) + 1e-4 per entry). NaN/±Inf components throw `NONFINITE`
 * (unlike {@link readNifti}, which keeps them in images and warns).
 *
 * @returns `[1, ...spatial, ndim]` float32, voxel units, component k along spatial axis k.
 */
export async function readDisplacementField(
  pathOrBytes: string | Uint8Array,
  reference: Volume,
  opts: ReadFieldOptions = {},
): Promise<tf.Tensor> {
  const fn = 'readDisplacementField';
  const file = typeof pathOrBytes === 'string' ? pathOrBytes : (opts.name ?? '<bytes>');
  const spatial = checkVolumeArg(fn, 'reference', reference);
  const nd = spatial.length;
  // a NaN/Inf displacement would silently poison every warp: refused (as before)
  const vol = await readVolume(pathOrBytes, {
    ...(opts.maxVoxels !== undefined ? { maxVoxels: opts.maxVoxels } : {}),
    ...(opts.name !== undefined ? { name: opts.name } : {}),
    ...(opts.format !== undefined ? { format: opts.format } : {}),
    allowNonFinite: false,
  });
  try {
    const dims = vol.header.dims;
    const fileSpatial = vol.data.shape.slice(1, -1);
    const ff = vol.header.fileFormat;
    const itkVector = ff === 'metaimage' || ff === 'nrrd';
    if (itkVector && vol.data.shape[vol.data.rank - 1] !== nd) {
      ioFail(
        file,
        'DIMS',
        `not a ${nd}D ITK displacement field: ${vol.data.shape[vol.data.rank - 1]} components per voxel, expected ${nd} (vectors in LPS mm) for the ${nd}D reference [${spatial.join(', ')}]`,
      );
    }
    if (ff === 'mgh') {
      ioFail(
        file,
        'DIMS',
        'MGH/MGZ has no displacement-field convention: read fields from .nii.gz, .mha or .nrrd',
      );
    }
    if (
      !itkVector &&
      (dims[0] !== 5 || dims[4] !== 1 || dims[5] !== nd || (nd === 2 && dims[3] !== 1))
    ) {
      ioFail(
        file,
        'DIMS',
        `not a ${nd}D ITK displacement field: dim = [${dims.join(', ')}], expected [5, nx, ny, ${nd === 2 ? 1 : 'nz'}, 1, ${nd}] (intent 1007, vectors in LPS mm) for the ${nd}D reference [${spatial.join(', ')}]`,
      );
    }
    if (!tf.util.arraysEqual(fileSpatial, spatial)) {
      ioFail(
        file,
        'SHAPE',
        `the field's grid [${fileSpatial.join(', ')}] differs from the reference grid [${spatial.join(', ')}]`,
      );
    }
    const bad = vol.affine.findIndex(
      (v, i) =>
        Math.abs(v - reference.affine[i]!) > 1e-5 * (1 + Math.abs(reference.affine[i]!)) + 1e-4,
    );
    if (bad >= 0) {
      const show = (a: number[]) => `[${a.map((v) => +v.toFixed(4)).join(', ')}]`;
      ioFail(
        file,
        'GRID',
        `the field's affine ${show(vol.affine)} differs from the reference's ${show(reference.affine)} (entry ${bad}); resample the field or pass the reference it was computed on`,
      );
    }
    const m = itkFieldMatrix(reference.affine, nd);
    const inv = invert(m);
    if (!inv) ioFail(file, 'AFFINE', "the reference's affine is singular");
    const values = (await vol.data.data()) as Float32Array;
    return tf.tensor(applyMatrix(values, inv, nd), [1, ...spatial, nd], 'float32');
  } finally {
    vol.data.dispose();
  }
}
