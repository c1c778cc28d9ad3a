import type { tf } from '@regkit/core';

/** NIfTI header fields of a volume (what {@link readNifti} found; what writers reuse). */
export interface NiftiHeaderInfo {
  /** 1 (348-byte header) or 2 (540-byte header). */
  version: 1 | 2;
  /** On-disk voxel type: `'uint8' | 'int8' | 'int16' | 'uint16' | 'int32' | 'uint32' | 'int64' | 'uint64' | 'float32' | 'float64'`. */
  datatype: string;
  /** NIfTI datatype code (2 = uint8, 4 = int16, 16 = float32, ...). */
  datatypeCode: number;
  /** Raw `dim[0..7]` (`dim[0]` = number of dimensions). */
  dims: number[];
  /** Raw `pixdim[0..7]` (`pixdim[0]` = qfac). */
  pixdim: number[];
  /** `scl_slope` as stored (0 or non-finite: no scaling). */
  sclSlope: number;
  /** `scl_inter` as stored. */
  sclInter: number;
  /** `qform_code` (0 unknown, 1 scanner, 2 aligned, 3 Talairach, 4 MNI, 5 template). */
  qformCode: number;
  /** `sform_code` (same codes as `qformCode`). */
  sformCode: number;
  /** `intent_code` (1007 = vector, e.g. ITK displacement fields). */
  intentCode: number;
  /** `intent_name`. */
  intentName: string;
  /** `descrip`. */
  description: string;
  /** `xyzt_units` (2 = mm; | 8 = seconds). */
  xyztUnits: number;
  /** Byte order of the file. */
  littleEndian: boolean;
  /** `vox_offset` (byte offset of the voxel data). */
  voxOffset: number;
  /** `cal_min`, `cal_max` (display range hints). */
  calMin: number;
  calMax: number;
  /** The qform affine (row-major 16) when `qform_code` > 0, else null. */
  qform: number[] | null;
  /** The sform affine (row-major 16) when `sform_code` > 0, else null. */
  sform: number[] | null;
  /** Which header fields gave `Volume.affine` (`'header'`: a MetaImage, NRRD or MGH file's geometry fields). */
  affineSource: 'sform' | 'qform' | 'pixdim' | 'header';
  /**
   * How the file stored the image: `'nifti'` (single `.nii`/`.nii.gz`), `'nifti-pair'`
   * (`.hdr` + `.img`, magic `ni1`/`ni2`) or `'analyze'` (Analyze 7.5 `.hdr` + `.img`, no magic:
   * qform/sform codes 0, `affineSource` `'pixdim'`), or by {@link readVolume}: `'metaimage'`
   * (`.mha`/`.mhd`), `'nrrd'`, `'mgh'` (`.mgh`/`.mgz`); for those the other fields are
   * NIfTI's defaults except `datatype`, `dims`, `pixdim[1..3]`, `littleEndian` and
   * `voxOffset` (the data offset in the header file). Absent on headers not read from a file.
   */
  fileFormat?: 'nifti' | 'nifti-pair' | 'analyze' | 'metaimage' | 'nrrd' | 'mgh';
}

/**
 * An image with its geometry. `data` is float32 `[1, ...spatial, C]` (spatial `[nx, ny]` or
 * `[nx, ny, nz]` in nibabel's array order: axis 0 = NIfTI i, 1 = j, 2 = k).
 */
export interface Volume {
  /** float32 `[1, ...spatial, C]`, channels last. */
  data: tf.Tensor;
  /** Row-major 4×4 voxel (i, j, k, 1) → RAS+ world mm (nibabel `img.affine`); 4×4 for 2D too. */
  affine: number[];
  /** Voxel size per spatial axis (mm): the norms of the affine's columns. */
  spacing: number[];
  /** Header fields (from the file, or inherited from a reference volume). */
  header: NiftiHeaderInfo;
  /**
   * What {@link readNifti} noticed but did not refuse, one sentence each, starting with the
   * file name: NaN/±Inf voxels (with their count; they are kept, see `finiteMask`), integer
   * values that float32 cannot hold exactly (datatype and max error), invalid pixdim (and the
   * fallback used), an ignored SPM `.mat` file. `[]` when there was nothing to say; absent on
   * volumes not read from a file.
   */
  warnings?: string[];
}
