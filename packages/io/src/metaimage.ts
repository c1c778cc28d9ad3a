import { ioFail } from './errors.js';
import type { DatatypeInfo } from './header.js';
import { datatypeByName } from './header.js';
import { det3 } from './matrix.js';
import {
  affineFromLps,
  checkBudget,
  checkBytes,
  decodeStored,
  encodeStored,
  integerRange,
  lpsFromAffine,
  num,
  writeDatatype,
} from './voxels.js';

/**
 * MetaImage (`.mha`: header + data in one file; `.mhd`: header, data in the file named by
 * `ElementDataFile`), as ITK's MetaIO reads and writes it. Geometry is LPS: `Offset` (origin,
 * mm), `ElementSpacing` (mm), `TransformMatrix` (the direction cosines, one axis after the
 * other: ITK `SetDirection(i, TransformMatrix[i·n .. i·n + n − 1])`).
 */

/** MetaIO element types (`MET_LONG` is 4 bytes in MetaIO, `MET_LONG_LONG` 8). */
const MET_TYPES: Record<string, string> = {
  MET_UCHAR: 'uint8',
  MET_CHAR: 'int8',
  MET_SHORT: 'int16',
  MET_USHORT: 'uint16',
  MET_INT: 'int32',
  MET_UINT: 'uint32',
  MET_LONG: 'int32',
  MET_ULONG: 'uint32',
  MET_LONG_LONG: 'int64',
  MET_ULONG_LONG: 'uint64',
  MET_FLOAT: 'float32',
  MET_DOUBLE: 'float64',
};

const MET_NAMES: Record<string, string> = {
  uint8: 'MET_UCHAR',
  int8: 'MET_CHAR',
  int16: 'MET_SHORT',
  uint16: 'MET_USHORT',
  int32: 'MET_INT',
  uint32: 'MET_UINT',
  float32: 'MET_FLOAT',
  float64: 'MET_DOUBLE',
};

/** Datatypes the MetaImage writer stores. */
export const METAIMAGE_WRITE_DATATYPES = Object.keys(MET_NAMES);

/** Longest MetaImage header accepted (the text before the data). */
export const META_HEADER_LIMIT = 1 << 16;

/** A parsed, validated MetaImage header. */
export interface MetaHeader {
  spatial: number[];
  channels: number;
  dtype: DatatypeInfo;
  littleEndian: boolean;
  compressed: boolean;
  /** Bytes of the compressed data when the header says (`CompressedDataSize`), else null. */
  compressedSize: number | null;
  /** `'LOCAL'` or the data file's name (relative to the header). */
  dataFile: string;
  /** Bytes to skip in the data file (`HeaderSize`; −1: the data are the file's last bytes). */
  headerSize: number;
  /** Offset of the data in the header file (`.mha`: just after the `ElementDataFile` line). */
  dataOffset: number;
  affine: number[];
  /** Uncompressed data bytes. */
  dataBytes: number;
}

function bool(v: string | undefined): boolean {
  return v !== undefined && /^(true|1|yes)$/i.test(v.trim());
}

function numbers(file: string, key: string, v: string, n: number): number[] {
  const parts = v.trim().split(/\s+/).map(Number);
  if (parts.length < n || parts.slice(0, n).some((x) => !Number.isFinite(x))) {
    ioFail(
      file,
      'MAGIC',
      `MetaImage ${key} = ${JSON.stringify(v.slice(0, 80))}: expected ${n} finite numbers`,
    );
  }
  return parts.slice(0, n);
}

/**
 * Parses a MetaImage header from the first bytes of a file: `key = value` lines up to
 * `ElementDataFile` (which must come last). Validates dims, type, budget and geometry before
 * anything large is allocated.
 */
export function parseMetaHeader(head: Uint8Array, file: string, maxVoxels: number): MetaHeader {
  const fields = new Map<string, string>();
  let pos = 0;
  let dataOffset = -1;
  const limit = Math.min(head.length, META_HEADER_LIMIT);
  while (pos < limit) {
    let end = pos;
    while (end < limit && head[end] !== 0x0a) end++;
    if (end >= limit && end < head.length) break; // line longer than the limit
    let line = '';
    for (let i = pos; i < end; i++) line += String.fromCharCode(head[i]!);
    pos = end + 1;
    line = line.replace(/\r$/, '');
    if (line.trim() === '') continue;
    const eq = line.indexOf('=');
    if (eq < 0) {
      ioFail(
        file,
        'MAGIC',
        `not a MetaImage header: line ${JSON.stringify(line.slice(0, 60))} has no '='`,
      );
    }
    const key = line.slice(0, eq).trim();
    const value = line.slice(eq + 1).trim();
    if (fields.size === 0 && !/^(ObjectType|NDims|Comment|ObjectSubType|Name)$/i.test(key)) {
      ioFail(
        file,
        'MAGIC',
        `not a MetaImage header (first key ${JSON.stringify(key.slice(0, 40))}; expected ObjectType or NDims)`,
      );
    }
    fields.set(key.toLowerCase(), value);
    if (key.toLowerCase() === 'elementdatafile') {
      dataOffset = Math.min(pos, head.length);
      break;
    }
  }
  if (fields.size === 0) ioFail(file, 'MAGIC', 'not a MetaImage header (no "key = value" lines)');
  if (dataOffset < 0) {
    ioFail(
      file,
      'MAGIC',
      `MetaImage header without ElementDataFile in its first ${Math.min(head.length, META_HEADER_LIMIT)} bytes (truncated, or not a MetaImage file)`,
    );
  }
  const get = (k: string) => fields.get(k.toLowerCase());
  const objectType = get('ObjectType');
  if (objectType !== undefined && !/^image$/i.test(objectType)) {
    ioFail(file, 'MAGIC', `MetaImage ObjectType = ${objectType}: only Image is read`);
  }
  const nd = Number(get('NDims'));
  if (!(nd === 2 || nd === 3)) {
    ioFail(
      file,
      'DIMS',
      `MetaImage NDims = ${get('NDims') ?? '(missing)'}: 2 or 3 spatial dimensions are read`,
    );
  }
  const dimStr = get('DimSize');
  if (dimStr === undefined) ioFail(file, 'DIMS', 'MetaImage header without DimSize');
  const dims = dimStr.trim().split(/\s+/).map(Number);
  if (dims.length < nd || dims.slice(0, nd).some((d) => !Number.isInteger(d) || d < 1)) {
    ioFail(
      file,
      'DIMS',
      `MetaImage DimSize = ${JSON.stringify(dimStr.slice(0, 60))}: ${nd} positive integers needed`,
    );
  }
  const size = dims.slice(0, nd);
  const chStr = get('ElementNumberOfChannels') ?? '1';
  const channels = Number(chStr);
  if (!Number.isInteger(channels) || channels < 1) {
    ioFail(file, 'DIMS', `MetaImage ElementNumberOfChannels = ${chStr}: a positive integer needed`);
  }
  const typeStr = (get('ElementType') ?? '').trim().toUpperCase();
  const typeName = MET_TYPES[typeStr.replace(/_ARRAY$/, '')];
  if (!typeName) {
    ioFail(
      file,
      'DATATYPE',
      `MetaImage ElementType = ${JSON.stringify(typeStr || '(missing)')} is not read (one of ${Object.keys(MET_TYPES).join(', ')})`,
    );
  }
  const dtype = datatypeByName(typeName)!;
  // regkit's shape rule (as readNifti): [nx, ny, 1] with nx, ny > 1 is 2D
  const spatial =
    nd === 3 && size[2] === 1 && size[0]! > 1 && size[1]! > 1 ? size.slice(0, 2) : size;
  const count = checkBudget(file, size, channels, maxVoxels);
  const msb = get('BinaryDataByteOrderMSB') ?? get('ElementByteOrderMSB');
  if (get('BinaryData') !== undefined && !bool(get('BinaryData'))) {
    ioFail(file, 'MAGIC', 'MetaImage BinaryData = False (ASCII voxel data) is not read');
  }
  const spacingStr = get('ElementSpacing') ?? get('ElementSize');
  const spacing = spacingStr ? numbers(file, 'ElementSpacing', spacingStr, nd) : Array(nd).fill(1);
  if (spacing.some((s) => s <= 0)) {
    ioFail(file, 'AFFINE', `MetaImage ElementSpacing = ${spacingStr}: spacings must be positive`);
  }
  const originStr = get('Offset') ?? get('Position') ?? get('Origin');
  const origin = originStr ? numbers(file, 'Offset', originStr, nd) : Array(nd).fill(0);
  const dirStr = get('TransformMatrix') ?? get('Rotation') ?? get('Orientation');
  let direction: number[][] = Array.from({ length: nd }, (_, r) =>
    Array.from({ length: nd }, (_, c) => (r === c ? 1 : 0)),
  );
  if (dirStr) {
    const m = numbers(file, 'TransformMatrix', dirStr, nd * nd);
    // TransformMatrix lists axis 0's direction, then axis 1's...: column c = m[c·nd .. ]
    direction = Array.from({ length: nd }, (_, r) =>
      Array.from({ length: nd }, (_, c) => m[c * nd + r]!),
    );
  }
  const d3 =
    nd === 3
      ? det3(direction)
      : direction[0]![0]! * direction[1]![1]! - direction[0]![1]! * direction[1]![0]!;
  if (!(Math.abs(d3) > 1e-8)) {
    ioFail(file, 'AFFINE', `MetaImage TransformMatrix = ${dirStr}: singular direction matrix`);
  }
  const affine = affineFromLps(direction, spacing, origin);
  const compressed = bool(get('CompressedData'));
  const cs = get('CompressedDataSize');
  const compressedSize =
    cs !== undefined && Number.isInteger(Number(cs)) && Number(cs) > 0 ? Number(cs) : null;
  const hs = get('HeaderSize');
  const headerSize = hs !== undefined && Number.isInteger(Number(hs)) ? Number(hs) : 0;
  if (headerSize < -1) ioFail(file, 'OFFSET', `MetaImage HeaderSize = ${hs}: must be ≥ −1`);
  const dataFile = get('ElementDataFile')!.trim();
  if (dataFile === '' || /^LIST/i.test(dataFile) || /%/.test(dataFile)) {
    ioFail(
      file,
      'PATH',
      `MetaImage ElementDataFile = ${JSON.stringify(dataFile)}: only LOCAL or a single data file is read`,
    );
  }
  return {
    spatial,
    channels,
    dtype,
    littleEndian: !bool(msb),
    compressed,
    compressedSize,
    dataFile,
    headerSize,
    dataOffset,
    affine,
    dataBytes: count * dtype.bytes,
  };
}

/** Decodes the uncompressed data bytes of a parsed header (interleaved channels). */
export function decodeMetaData(
  h: MetaHeader,
  data: Uint8Array,
  file: string,
  warnings: string[],
): Float32Array {
  checkBytes(file, data.length, h.dataBytes, h.spatial, h.channels, h.dtype);
  return decodeStored(
    file,
    h.dtype,
    h.littleEndian,
    data,
    h.spatial,
    h.channels,
    'interleaved',
    warnings,
  );
}

/** What {@link encodeMetaImage} writes. */
export interface MetaEncodeInput {
  values: ArrayLike<number>;
  spatial: number[];
  channels: number;
  affine: number[];
  datatype?: string | undefined;
  /** zlib-compress the data (`CompressedData = True`); the caller compresses. */
  compressed: boolean;
  /** `'LOCAL'` (.mha) or the data file's base name (.mhd). */
  dataFile: string;
}

/**
 * The MetaImage header text and the (uncompressed) data bytes: little-endian, channels
 * interleaved (`ElementNumberOfChannels`), geometry as LPS (ITK's `MetaImageIO` conventions).
 * The caller appends the data (compressed or not) after the header for `.mha`.
 */
export function encodeMetaImage(
  file: string,
  input: MetaEncodeInput,
): { header: (compressedSize?: number) => Uint8Array; data: Uint8Array } {
  const dtype = writeDatatype(file, input.datatype, METAIMAGE_WRITE_DATATYPES);
  const nd = input.spatial.length;
  const { direction, spacing, origin } = lpsFromAffine(file, input.affine, nd);
  const tm: number[] = [];
  for (let c = 0; c < nd; c++) for (let r = 0; r < nd; r++) tm.push(direction[r]![c]!);
  const lines = (compressedSize?: number) => [
    'ObjectType = Image',
    `NDims = ${nd}`,
    'BinaryData = True',
    'BinaryDataByteOrderMSB = False',
    `CompressedData = ${input.compressed ? 'True' : 'False'}`,
    ...(input.compressed && compressedSize !== undefined
      ? [`CompressedDataSize = ${compressedSize}`]
      : []),
    `TransformMatrix = ${tm.map(num).join(' ')}`,
    `Offset = ${origin.map(num).join(' ')}`,
    `CenterOfRotation = ${Array(nd).fill(0).join(' ')}`,
    `ElementSpacing = ${spacing.map(num).join(' ')}`,
    `DimSize = ${input.spatial.join(' ')}`,
    ...(input.channels > 1 ? [`ElementNumberOfChannels = ${input.channels}`] : []),
    `ElementType = ${MET_NAMES[dtype.name]}`,
    `ElementDataFile = ${input.dataFile}`,
  ];
  const header = (compressedSize?: number) =>
    new TextEncoder().encode(`${lines(compressedSize).join('\n')}\n`);
  const data = encodeStored(
    input.values,
    input.spatial,
    input.channels,
    dtype,
    integerRange(dtype.name),
    'interleaved',
    false,
  );
  return { header, data };
}
