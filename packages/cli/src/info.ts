import { axisCodes, readVolume } from '@regkit/io';
import { UsageError } from './errors.js';

/** What `info` reports about an image file. */
export interface InfoSummary {
  file: string;
  /** `'NIfTI-1'`, `'NIfTI-2'`, `'NIfTI-1 pair'`, `'Analyze 7.5'`, `'MetaImage'`, `'NRRD'` or `'MGH'`. */
  format: string;
  /** NIfTI version (1 or 2; 1 for the other formats, whose header regkit describes as NIfTI-1). */
  version: number;
  datatype: string;
  shape: number[];
  channels: number;
  spacing: number[];
  orientation: string;
  affine: number[][];
  affineSource: string;
  intentCode: number;
  description: string;
  min: number;
  max: number;
  mean: number;
}

const FORMAT_NAMES: Record<string, string> = {
  'nifti-pair': 'NIfTI-1 pair',
  analyze: 'Analyze 7.5',
  metaimage: 'MetaImage',
  nrrd: 'NRRD',
  mgh: 'MGH',
};

/** `regkit info`: header and value summary of an image file (NIfTI, MetaImage, NRRD, MGH). */
export async function infoCommand(file: string | undefined): Promise<InfoSummary> {
  if (!file) throw new UsageError('info needs a FILE');
  const v = await readVolume(file, { allowNonFinite: true });
  try {
    const values = (await v.data.data()) as Float32Array;
    let min = Number.POSITIVE_INFINITY;
    let max = Number.NEGATIVE_INFINITY;
    let sum = 0;
    for (let i = 0; i < values.length; i++) {
      const x = values[i]!;
      if (x < min) min = x;
      if (x > max) max = x;
      sum += x;
    }
    const ff = v.header.fileFormat ?? 'nifti';
    return {
      file,
      format: FORMAT_NAMES[ff] ?? `NIfTI-${v.header.version}`,
      version: v.header.version,
      datatype: v.header.datatype,
      shape: v.data.shape.slice(1, -1),
      channels: v.data.shape[v.data.rank - 1]!,
      spacing: v.spacing.map((s) => +s.toFixed(6)),
      orientation: axisCodes(v.affine),
      affine: [0, 1, 2, 3].map((r) => v.affine.slice(r * 4, r * 4 + 4).map((x) => +x.toFixed(6))),
      affineSource: v.header.affineSource,
      intentCode: v.header.intentCode,
      description: v.header.description,
      min,
      max,
      mean: sum / values.length,
    };
  } finally {
    v.data.dispose();
  }
}
