import { ioFail } from './errors.js';
import { type DatatypeInfo, datatypeByName } from './header.js';
import { det3 } from './matrix.js';
import {
  affineFromLps,
  type ChannelStorage,
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
 * NRRD (`.nrrd` with attached data, `.nhdr` with a `data file`), per the NRRD0001–0005
 * specification (teem): `type`, `dimension`, `sizes`, `endian`, `encoding` (raw, gzip, ascii),
 * and the geometry fields `space`, `space directions`, `space origin` (or `spacings`). One
 * non-spatial axis (kind `vector`, `list`, ...; `none` in `space directions`) is read as the
 * channels when it is the first (interleaved, as ITK writes vector images) or the last axis.
 */

const TYPES: Array<[RegExp, string]> = [
  [/^(signed char|int8|int8_t)$/, 'int8'],
  [/^(uchar|unsigned char|uint8|uint8_t)$/, 'uint8'],
  [/^(short|short int|signed short|signed short int|int16|int16_t)$/, 'int16'],
  [/^(ushort|unsigned short|unsigned short int|uint16|uint16_t)$/, 'uint16'],
  [/^(int|signed int|int32|int32_t)$/, 'int32'],
  [/^(uint|unsigned int|uint32|uint32_t)$/, 'uint32'],
  [
    /^(longlong|long long|long long int|signed long long|signed long long int|int64|int64_t)$/,
    'int64',
  ],
  [/^(ulonglong|unsigned long long|unsigned long long int|uint64|uint64_t)$/, 'uint64'],
  [/^float$/, 'float32'],
  [/^double$/, 'float64'],
];

const WRITE_NAMES: Record<string, string> = {
  uint8: 'uint8',
  int8: 'int8',
  int16: 'int16',
  uint16: 'uint16',
  int32: 'int32',
  uint32: 'uint32',
  float32: 'float',
  float64: 'double',
};

/** Datatypes the NRRD writer stores. */
export const NRRD_WRITE_DATATYPES = Object.keys(WRITE_NAMES);

/** Longest NRRD header accepted. */
export const NRRD_HEADER_LIMIT = 1 << 16;

/** Sign flips from a named space to LPS (x, y, z). */
const SPACES: Record<string, [number, number, number]> = {
  'left-posterior-superior': [1, 1, 1],
  lps: [1, 1, 1],
  'right-anterior-superior': [-1, -1, 1],
  ras: [-1, -1, 1],
  'left-anterior-superior': [1, -1, 1],
  las: [1, -1, 1],
  'scanner-xyz': [1, 1, 1],
  '3d-right-handed': [1, 1, 1],
};

/** A parsed, validated NRRD header. */
export interface NrrdHeader {
  spatial: number[];
  channels: number;
  storage: ChannelStorage;
  dtype: DatatypeInfo;
  littleEndian: boolean;
  encoding: 'raw' | 'gzip' | 'ascii';
  /** null: attached data (after the blank line). */
  dataFile: string | null;
  /** Offset of attached data in the file. */
  dataOffset: number;
  lineSkip: number;
  /** Bytes to skip (raw: −1 = the data are the last bytes). */
  byteSkip: number;
  affine: number[];
  dataBytes: number;
  count: number;
  warnings: string[];
}

function vectors(file: string, v: string, n: number): Array<number[] | null> {
  const out: Array<number[] | null> = [];
  const re = /\(([^)]*)\)|none/gi;
  let m: RegExpExecArray | null = re.exec(v);
  while (m) {
    if (m[1] === undefined) out.push(null);
    else {
      const xs = m[1].split(',').map((x) => Number(x.trim()));
      if (xs.length !== n || xs.some((x) => !Number.isFinite(x))) {
        ioFail(file, 'AFFINE', `NRRD vector (${m[1].slice(0, 60)}): ${n} finite numbers needed`);
      }
      out.push(xs);
    }
    m = re.exec(v);
  }
  return out;
}

/**
 * Parses a NRRD header (magic `NRRD000n`, `field: value` lines up to a blank line or the end
 * of a detached header); validates before anything large is allocated. `detached`: the bytes
 * are a `.nhdr` (no data after the header).
 */
export function parseNrrdHeader(head: Uint8Array, file: string, maxVoxels: number): NrrdHeader {
  const magic = String.fromCharCode(...head.subarray(0, 8));
  if (!/^NRRD000[1-5]$/.test(magic)) {
    ioFail(
      file,
      'MAGIC',
      `not a NRRD file (magic ${JSON.stringify(magic)}, expected NRRD0001–NRRD0005)`,
    );
  }
  const fields = new Map<string, string>();
  let pos = 0;
  let dataOffset = -1;
  const limit = Math.min(head.length, NRRD_HEADER_LIMIT);
  let first = true;
  while (pos < limit) {
    let end = pos;
    while (end < limit && head[end] !== 0x0a) end++;
    if (end >= limit && end < head.length) break;
    let line = '';
    for (let i = pos; i < end; i++) line += String.fromCharCode(head[i]!);
    pos = end + 1;
    line = line.replace(/\r$/, '');
    if (first) {
      first = false;
      continue;
    }
    if (line === '') {
      dataOffset = Math.min(pos, head.length);
      break;
    }
    if (line.startsWith('#')) continue;
    if (line.includes(':=')) continue; // key/value pairs
    const c = line.indexOf(': ');
    if (c < 0)
      ioFail(
        file,
        'MAGIC',
        `NRRD header line ${JSON.stringify(line.slice(0, 60))} is not "field: value"`,
      );
    fields.set(line.slice(0, c).trim().toLowerCase(), line.slice(c + 2).trim());
  }
  const get = (k: string) => fields.get(k);
  const dataFileStr = get('data file') ?? get('datafile');
  if (dataOffset < 0 && dataFileStr === undefined) {
    ioFail(
      file,
      'SIZE',
      `NRRD header without its blank line in the first ${limit} bytes (truncated?)`,
    );
  }
  const typeStr = (get('type') ?? '').toLowerCase();
  const typeName = TYPES.find(([re]) => re.test(typeStr))?.[1];
  if (!typeName)
    ioFail(file, 'DATATYPE', `NRRD type ${JSON.stringify(typeStr || '(missing)')} is not read`);
  const dtype = datatypeByName(typeName)!;
  const dim = Number(get('dimension'));
  if (!Number.isInteger(dim) || dim < 2 || dim > 4) {
    ioFail(file, 'DIMS', `NRRD dimension ${get('dimension') ?? '(missing)'}: 2 to 4 axes are read`);
  }
  const sizes = (get('sizes') ?? '').split(/\s+/).map(Number);
  if (sizes.length !== dim || sizes.some((s) => !Number.isInteger(s) || s < 1)) {
    ioFail(
      file,
      'DIMS',
      `NRRD sizes ${JSON.stringify(get('sizes') ?? '')}: ${dim} positive integers needed`,
    );
  }
  const kinds = (get('kinds') ?? '').split(/\s+/).filter((k) => k !== '');
  const spaceName = get('space')?.toLowerCase();
  let spaceDim = Number(get('space dimension') ?? Number.NaN);
  const warnings: string[] = [];
  let flip: [number, number, number] = [1, 1, 1];
  if (spaceName !== undefined) {
    const f = SPACES[spaceName];
    if (!f)
      ioFail(
        file,
        'AFFINE',
        `NRRD space ${JSON.stringify(spaceName)} is not read (LPS, RAS, LAS or scanner-xyz)`,
      );
    flip = f;
    spaceDim = 3;
  }
  const dirStr = get('space directions');
  const dirs =
    dirStr !== undefined && Number.isInteger(spaceDim) ? vectors(file, dirStr, spaceDim) : null;
  if (dirs && dirs.length !== dim) {
    ioFail(file, 'AFFINE', `NRRD space directions: ${dirs.length} entries for ${dim} axes`);
  }
  // which axes are spatial
  const isSpatial = (a: number) => {
    if (dirs) return dirs[a] !== null;
    const k = kinds[a]?.toLowerCase();
    return k === undefined || k === 'domain' || k === 'space' || k === '???' || k === 'none';
  };
  const spatialAxes = Array.from({ length: dim }, (_, a) => a).filter(isSpatial);
  const other = Array.from({ length: dim }, (_, a) => a).filter((a) => !isSpatial(a));
  if (spatialAxes.length < 2 || spatialAxes.length > 3 || other.length > 1) {
    ioFail(
      file,
      'DIMS',
      `NRRD with ${spatialAxes.length} spatial and ${other.length} other axes: 2 or 3 spatial axes and at most one vector/list axis are read`,
    );
  }
  let storage: ChannelStorage = 'interleaved';
  let channels = 1;
  if (other.length === 1) {
    const a = other[0]!;
    if (a !== 0 && a !== dim - 1) {
      ioFail(
        file,
        'DIMS',
        `NRRD non-spatial axis ${a} of ${dim}: only the first (vector) or last (list) axis is read`,
      );
    }
    channels = sizes[a]!;
    storage = a === 0 ? 'interleaved' : 'planar';
  }
  const size = spatialAxes.map((a) => sizes[a]!);
  const nd = size.length;
  const count = checkBudget(file, size, channels, maxVoxels);
  // geometry
  let direction: number[][];
  let spacing: number[];
  let origin: number[];
  if (dirs) {
    if (spaceDim !== nd && !(spaceDim === 3 && nd === 2)) {
      ioFail(file, 'AFFINE', `NRRD space dimension ${spaceDim} for ${nd} spatial axes`);
    }
    const cols = spatialAxes.map((a) => dirs[a]!.map((v, r) => v * flip[r]!));
    if (spaceDim === 3 && nd === 2) {
      // a 2D image in 3D space: third axis = unit normal
      const [u, v] = cols as [number[], number[]];
      const n = [
        u[1]! * v[2]! - u[2]! * v[1]!,
        u[2]! * v[0]! - u[0]! * v[2]!,
        u[0]! * v[1]! - u[1]! * v[0]!,
      ];
      const nn = Math.hypot(...n);
      cols.push(nn > 0 ? n.map((x) => x / nn) : [0, 0, 1]);
    }
    const d = cols.length;
    spacing = cols.map((c) => Math.hypot(...c));
    if (spacing.some((s) => !(s > 0)))
      ioFail(file, 'AFFINE', `NRRD space directions ${dirStr}: zero-length axis`);
    direction = Array.from({ length: d }, (_, r) => cols.map((c, j) => c[r]! / spacing[j]!));
    const o = get('space origin');
    origin = o
      ? (vectors(file, o, spaceDim)[0] ?? Array(spaceDim).fill(0)).map((v, r) => v * flip[r]!)
      : Array(d).fill(0);
    if (origin.length < d) origin = [...origin, 0];
    if (d === 3 && nd === 2) size.push(1);
  } else {
    const sp = (get('spacings') ?? '').split(/\s+/).map(Number);
    spacing = spatialAxes.map((a) => (Number.isFinite(sp[a]) && sp[a]! > 0 ? sp[a]! : 1));
    direction = Array.from({ length: nd }, (_, r) =>
      Array.from({ length: nd }, (_, c) => (r === c ? 1 : 0)),
    );
    origin = Array(nd).fill(0);
  }
  const dd =
    direction.length === 3
      ? det3(direction)
      : direction[0]![0]! * direction[1]![1]! - direction[0]![1]! * direction[1]![0]!;
  if (!(Math.abs(dd) > 1e-8)) ioFail(file, 'AFFINE', `NRRD space directions ${dirStr}: singular`);
  const affine = affineFromLps(direction, spacing, origin);
  const spatial =
    size.length === 3 && size[2] === 1 && size[0]! > 1 && size[1]! > 1 ? size.slice(0, 2) : size;
  const encStr = (get('encoding') ?? '').toLowerCase();
  const encoding =
    encStr === 'raw'
      ? 'raw'
      : encStr === 'gz' || encStr === 'gzip'
        ? 'gzip'
        : /^(txt|text|ascii)$/.test(encStr)
          ? 'ascii'
          : null;
  if (!encoding)
    ioFail(
      file,
      'DATATYPE',
      `NRRD encoding ${JSON.stringify(encStr || '(missing)')} is not read (raw, gzip or ascii)`,
    );
  const endian = (get('endian') ?? 'little').toLowerCase();
  if (dtype.bytes > 1 && encoding !== 'ascii' && endian !== 'little' && endian !== 'big') {
    ioFail(file, 'MAGIC', `NRRD endian ${JSON.stringify(endian)}: little or big`);
  }
  let dataFile: string | null = null;
  if (dataFileStr !== undefined) {
    if (/^LIST/i.test(dataFileStr) || /%/.test(dataFileStr) || /\s/.test(dataFileStr.trim())) {
      ioFail(
        file,
        'PATH',
        `NRRD data file ${JSON.stringify(dataFileStr)}: only a single data file is read`,
      );
    }
    dataFile = dataFileStr.trim();
  }
  const ls = Number(get('line skip') ?? get('lineskip') ?? 0);
  const bs = Number(get('byte skip') ?? get('byteskip') ?? 0);
  if (!Number.isInteger(ls) || ls < 0)
    ioFail(file, 'OFFSET', `NRRD line skip ${ls}: a non-negative integer needed`);
  if (!Number.isInteger(bs) || bs < -1)
    ioFail(file, 'OFFSET', `NRRD byte skip ${bs}: an integer ≥ −1 needed`);
  return {
    spatial,
    channels,
    storage,
    dtype,
    littleEndian: endian !== 'big',
    encoding,
    dataFile,
    dataOffset: dataOffset < 0 ? head.length : dataOffset,
    lineSkip: ls,
    byteSkip: bs,
    affine,
    dataBytes: count * dtype.bytes,
    count,
    warnings,
  };
}

/** Skips `lineSkip` lines, then `byteSkip` bytes (−1: the last `dataBytes` bytes, raw only). */
export function skipNrrd(h: NrrdHeader, data: Uint8Array, file: string): Uint8Array {
  let pos = 0;
  for (let l = 0; l < h.lineSkip; l++) {
    while (pos < data.length && data[pos] !== 0x0a) pos++;
    pos++;
  }
  if (h.byteSkip === -1) {
    if (h.encoding !== 'raw') ioFail(file, 'OFFSET', 'NRRD byte skip −1 needs raw encoding');
    return data.subarray(Math.max(pos, data.length - h.dataBytes));
  }
  return data.subarray(Math.min(data.length, pos + h.byteSkip));
}

/** Decodes NRRD data bytes (already inflated for gzip; text for ascii). */
export function decodeNrrdData(
  h: NrrdHeader,
  data: Uint8Array,
  file: string,
  warnings: string[],
): Float32Array {
  if (h.encoding === 'ascii') {
    const vals = new Float64Array(h.count);
    let n = 0;
    let i = 0;
    while (n < h.count && i < data.length) {
      while (
        i < data.length &&
        (data[i] === 0x20 ||
          data[i] === 0x0a ||
          data[i] === 0x0d ||
          data[i] === 0x09 ||
          data[i] === 0x2c)
      )
        i++;
      const s = i;
      while (
        i < data.length &&
        !(
          data[i] === 0x20 ||
          data[i] === 0x0a ||
          data[i] === 0x0d ||
          data[i] === 0x09 ||
          data[i] === 0x2c
        )
      )
        i++;
      if (i === s) break;
      let tok = '';
      for (let k = s; k < i && k - s < 64; k++) tok += String.fromCharCode(data[k]!);
      const v = Number(tok);
      if (Number.isNaN(v) && !/^nan$/i.test(tok))
        ioFail(file, 'SIZE', `NRRD ascii value ${JSON.stringify(tok)} is not a number`);
      vals[n++] = v;
    }
    if (n < h.count) ioFail(file, 'SIZE', `NRRD ascii data: ${n} values, ${h.count} needed`);
    const bytes = new Uint8Array(vals.buffer);
    return decodeStored(
      file,
      datatypeByName('float64')!,
      true,
      bytes,
      h.spatial,
      h.channels,
      h.storage,
      warnings,
    );
  }
  checkBytes(file, data.length, h.dataBytes, h.spatial, h.channels, h.dtype);
  return decodeStored(
    file,
    h.dtype,
    h.littleEndian,
    data,
    h.spatial,
    h.channels,
    h.storage,
    warnings,
  );
}

/**
 * NRRD0004 header + raw data bytes: little-endian, `space: left-posterior-superior` (3D) or
 * `space dimension: 2`, `space directions` / `space origin` in mm, channels as a first
 * `vector` axis. `gzip`: the header says `encoding: gzip` (the caller compresses the data).
 */
export function encodeNrrd(
  file: string,
  input: {
    values: ArrayLike<number>;
    spatial: number[];
    channels: number;
    affine: number[];
    datatype?: string | undefined;
  },
  gzip: boolean,
): { header: Uint8Array; data: Uint8Array } {
  const dtype = writeDatatype(file, input.datatype, NRRD_WRITE_DATATYPES);
  const nd = input.spatial.length;
  const { direction, spacing, origin } = lpsFromAffine(file, input.affine, nd);
  const vec = input.channels > 1;
  const axisDirs = Array.from(
    { length: nd },
    (_, c) => `(${direction.map((row) => num(row[c]! * spacing[c]!)).join(',')})`,
  );
  const lines = [
    'NRRD0004',
    '# Complete NRRD file format specification at:',
    '# http://teem.sourceforge.net/nrrd/format.html',
    `type: ${WRITE_NAMES[dtype.name]}`,
    `dimension: ${nd + (vec ? 1 : 0)}`,
    nd === 3 ? 'space: left-posterior-superior' : 'space dimension: 2',
    `sizes: ${[...(vec ? [input.channels] : []), ...input.spatial].join(' ')}`,
    `space directions: ${[...(vec ? ['none'] : []), ...axisDirs].join(' ')}`,
    `kinds: ${[...(vec ? ['vector'] : []), ...Array(nd).fill('domain')].join(' ')}`,
    ...(dtype.bytes > 1 ? ['endian: little'] : []),
    `encoding: ${gzip ? 'gzip' : 'raw'}`,
    `space origin: (${origin.map(num).join(',')})`,
    '',
  ];
  const header = new TextEncoder().encode(`${lines.join('\n')}\n`);
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
