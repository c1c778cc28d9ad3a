import { RegkitError } from '@regkit/core';

/**
 * Machine-readable reason of a {@link RegkitIOError}:
 * - `'NOTFOUND'`, `'IO'`: the file could not be opened, read or written (for a pair whose
 *   partner is missing, `file` is the missing partner);
 * - `'GZIP'`: truncated or corrupt gzip stream;
 * - `'MAGIC'`: not a NIfTI-1/NIfTI-2 file (`sizeof_hdr`/magic string), or the header of a
 *   `.hdr/.img` pair given without its image;
 * - `'SIZE'`: fewer bytes than the header promises (truncated file, or a pair's `.img` shorter
 *   than its `.hdr` says: the error names the `.img`);
 * - `'DIMS'`: invalid or unsupported `dim[]`; `'BUDGET'`: more values than `maxVoxels`;
 * - `'OFFSET'`: invalid `vox_offset`; `'DATATYPE'`: unsupported datatype code;
 * - `'AFFINE'`: the header's orientation gives no finite affine; `'SCALE'`: invalid `scl_inter`;
 * - `'NONFINITE'`: NaN/Inf voxels with `allowNonFinite: false` (by default they are read and
 *   reported in `Volume.warnings`), or in a displacement field;
 * - `'EXISTS'`: the output (either file of a pair) exists and `overwrite` is false;
 *   `'PATH'`: unsupported file extension;
 * - `'SHAPE'`: tensor shapes do not fit (field vs reference grid, volume data, ...);
 * - `'GRID'`: a displacement field's affine differs from the reference's;
 * - `'OPTION'`: an invalid option or argument;
 * - `'TRANSFORM'`: not a readable ITK/ANTs affine transform file (text or MATLAB v4 `.mat`).
 */
export type RegkitIOErrorCode =
  | 'NOTFOUND'
  | 'IO'
  | 'GZIP'
  | 'MAGIC'
  | 'SIZE'
  | 'DIMS'
  | 'BUDGET'
  | 'OFFSET'
  | 'DATATYPE'
  | 'AFFINE'
  | 'SCALE'
  | 'NONFINITE'
  | 'EXISTS'
  | 'PATH'
  | 'SHAPE'
  | 'GRID'
  | 'OPTION'
  | 'TRANSFORM';

/**
 * Every error `@regkit/io` throws on purpose. `message` starts with the file name (`file`)
 * when there is one, e.g. `brain.nii.gz: truncated gzip stream (...)`; `code` says why
 * (see {@link RegkitIOErrorCode}).
 */
export class RegkitIOError extends RegkitError {
  override name = 'RegkitIOError';
  /** The file (path or the `name` given with bytes); `''` for errors not tied to a file. */
  readonly file: string;
  /** Machine-readable reason, one of {@link RegkitIOErrorCode}. */
  readonly code: RegkitIOErrorCode;

  constructor(file: string, code: RegkitIOErrorCode, message: string) {
    super(file ? `${file}: ${message}` : message);
    this.file = file;
    this.code = code;
  }
}

/** Throws a RegkitIOError. */
export function ioFail(file: string, code: RegkitIOErrorCode, message: string): never {
  throw new RegkitIOError(file, code, message);
}
