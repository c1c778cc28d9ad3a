/**
 * @regkit/io — medical image I/O for regkit: NIfTI-1/2 read and write (`.nii`, `.nii.gz`,
 * `.hdr/.img` pairs; Analyze 7.5 read), MetaImage (`.mha`, `.mhd`), NRRD (`.nrrd`; `.nhdr`
 * read) and FreeSurfer MGH (`.mgh`, `.mgz`) read and write (`readVolume`/`writeVolume`), ITK/ANTs displacement fields and affine transforms, reorientation to RAS+,
 * resampling through affines, and PNG slice previews.
 *
 * Conventions: image `[1, ...spatial, C]` float32 with spatial axes in nibabel's array order
 * (axis 0 = NIfTI i, 1 = j, 2 = k; `dim[3]` = 1 with `dim[1]`, `dim[2]` > 1 → 2D, everything
 * else, 1×1×1 included, 3D); `affine` = row-major 4×4 voxel →
 * RAS+ mm, as nibabel `img.affine`; displacement fields `[1, ...spatial, ndim]` in voxels.
 *
 * @packageDocumentation
 */
export { RegkitIOError, type RegkitIOErrorCode } from './errors.js';
export {
  encodeDisplacementField,
  encodeDisplacementFieldChunks,
  itkFieldMatrix,
  NIFTI_INTENT_VECTOR,
  type ReadFieldOptions,
  readDisplacementField,
  type WriteFieldOptions,
  writeDisplacementField,
} from './field.js';
export {
  FIGURE_GAP_PX,
  FIGURE_MARGIN_PX,
  type FigurePanel,
  figureCaption,
  type RegistrationFigure,
  type RegistrationFigureFigures,
  type RegistrationFigureInputs,
  type RegistrationFigureOptions,
  renderRegistrationFigure,
  saveRegistrationFigure,
} from './figure.js';
export { drawText, GLYPH_H, GLYPH_W, measureText, type TextOptions } from './font.js';
export {
  type EncodeVolumeOptions,
  encodeVolume,
  IMAGE_EXTENSIONS,
  type ImageFormat,
  imageFormat,
  type ReadVolumeOptions,
  readVolume,
  WRITABLE_IMAGE_EXTENSIONS,
  type WriteVolumeOptions,
  writeVolume,
} from './formats.js';
export {
  decodeItkAffine,
  encodeItkAffine,
  type ItkAffine,
  itkToVoxelAffine,
  readItkAffine,
  voxelAffineToItk,
  voxelToItkPhysical,
  type WriteItkAffineOptions,
  writeItkAffine,
} from './itk_affine.js';
export { axisCodes } from './matrix.js';
export { MGH_STORED_AS } from './mgh.js';
export {
  encodePng,
  labelColour,
  type RGBAImage,
  renderSlice,
  type SliceOptions,
  saveSlicePng,
} from './png.js';
export { DEFAULT_MAX_VOXELS, type ReadNiftiOptions, readNifti } from './read.js';
export {
  backgroundValue,
  type ResampleOptions,
  referenceToMovingVoxels,
  resampleToReference,
} from './resample.js';
export type { NiftiHeaderInfo, Volume } from './types.js';
export { defaultHeader, finiteMask, fromCanonical, toCanonical, volumeLike } from './volume.js';
export {
  type EncodeNiftiOptions,
  encodeNifti,
  encodeNiftiChunks,
  NIFTI_INTEGER_RANGES,
  type NiftiWriteDatatype,
  type VolumeLikeInput,
  type WriteNiftiOptions,
  writeNifti,
} from './write.js';
