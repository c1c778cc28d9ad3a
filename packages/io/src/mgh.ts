import { ioFail } from './errors.js';
import { type DatatypeInfo, datatypeByName } from './header.js';
import { columnNorms, det3 } from './matrix.js';
import { checkBudget, checkBytes, decodeStored, encodeStored, integerRange } from './voxels.js';

/**
 * FreeSurfer MGH (`.mgh`; gzip-compressed `.mgz`): a 284-byte big-endian header (version 1,
 * width, height, depth, frames, type, dof, goodRASFlag, delta[3], Mdc[3][3], Pxyz_c[3]), the
 * voxels (x fastest, then y, z, frame) and an optional footer. The voxel → RAS affine is
 * nibabel's `MGHHeader.get_affine`: A = Mdcᵀ·diag(delta), t = Pxyz_c − A·(dims / 2), with
 * nibabel's default (delta 1, Mdc rows (−1, 0, 0), (0, 0, 1), (0, −1, 0), Pxyz_c 0) when
 * goodRASFlag is 0.
 */

/** MGH header size: the voxels start here. */
export const MGH_DATA_OFFSET = 284;

const MGH_TYPES: Record<number, string> = { 0: 'uint8', 4: 'int16', 1: 'int32', 3: 'float32' };
const MGH_CODES: Record<string, number> = { uint8: 0, int16: 4, int32: 1, float32: 3 };

/** The MGH type a requested datatype is stored as (MGH holds uint8, int16, int32, float32). */
export const MGH_STORED_AS: Readonly<Record<string, string>> = {
  uint8: 'uint8',
  int8: 'int16',
  int16: 'int16',
  uint16: 'int32',
  int32: 'int32',
  uint32: 'float32',
  float32: 'float32',
  float64: 'float32',
};

/** A parsed, validated MGH header. */
export interface MghHeader {
  spatial: number[];
  channels: number;
  dtype: DatatypeInfo;
  affine: number[];
  dataBytes: number;
}

/** Parses an MGH header (at least 284 bytes). */
export function parseMghHeader(head: Uint8Array, file: string, maxVoxels: number): MghHeader {
  if (head.length < 90) {
    ioFail(file, 'SIZE', `${head.length} bytes: too short for an MGH header (284 bytes)`);
  }
  const dv = new DataView(head.buffer, head.byteOffset, head.length);
  const version = dv.getInt32(0, false);
  if (version !== 1) {
    ioFail(
      file,
      'MAGIC',
      `not an MGH file (version ${version}, expected 1; .mgz must be gzip-compressed)`,
    );
  }
  const dims = [4, 8, 12, 16].map((o) => dv.getInt32(o, false));
  if (dims.some((d) => d < 1))
    ioFail(file, 'DIMS', `MGH dimensions [${dims.join(', ')}] must be positive`);
  const type = dv.getInt32(20, false);
  const typeName = MGH_TYPES[type];
  if (!typeName)
    ioFail(file, 'DATATYPE', `MGH type ${type} is not read (0 uchar, 1 int, 3 float, 4 short)`);
  const dtype = datatypeByName(typeName)!;
  const [w, h, d, frames] = dims as [number, number, number, number];
  const count = checkBudget(file, [w, h, d], frames, maxVoxels);
  const good = dv.getInt16(28, false);
  let delta = [1, 1, 1];
  // Mdc as stored: row i = the RAS direction of voxel axis i
  let mdc = [
    [-1, 0, 0],
    [0, 0, 1],
    [0, -1, 0],
  ];
  let c = [0, 0, 0];
  if (good !== 0) {
    delta = [0, 1, 2].map((i) => dv.getFloat32(30 + 4 * i, false));
    mdc = [0, 1, 2].map((i) => [0, 1, 2].map((j) => dv.getFloat32(42 + 12 * i + 4 * j, false)));
    c = [0, 1, 2].map((i) => dv.getFloat32(78 + 4 * i, false));
  }
  const a3 = [0, 1, 2].map((r) => [0, 1, 2].map((k) => mdc[k]![r]! * delta[k]!));
  const all = [...a3.flat(), ...c];
  if (!all.every(Number.isFinite) || !(Math.abs(det3(a3)) > 0)) {
    ioFail(
      file,
      'AFFINE',
      `MGH geometry (delta [${delta.join(', ')}], Mdc, Pxyz_c) gives no invertible affine`,
    );
  }
  const half = [w / 2, h / 2, d / 2];
  const affine = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
  for (let r = 0; r < 3; r++) {
    let t = c[r]!;
    for (let k = 0; k < 3; k++) {
      affine[r * 4 + k] = a3[r]![k]!;
      t -= a3[r]![k]! * half[k]!;
    }
    affine[r * 4 + 3] = t;
  }
  const spatial = d === 1 && w > 1 && h > 1 ? [w, h] : [w, h, d];
  return { spatial, channels: frames, dtype, affine, dataBytes: count * dtype.bytes };
}

/** Decodes MGH voxels (big-endian; frames planar). */
export function decodeMghData(
  h: MghHeader,
  data: Uint8Array,
  file: string,
  warnings: string[],
): Float32Array {
  checkBytes(file, data.length, h.dataBytes, h.spatial, h.channels, h.dtype);
  return decodeStored(file, h.dtype, false, data, h.spatial, h.channels, 'planar', warnings);
}

/**
 * MGH bytes (uncompressed): header (version 1, dof 0, goodRASFlag 1, delta = column norms,
 * Mdc = normalised columns, Pxyz_c = A·(dims / 2) + t, as nibabel `MGHHeader.set_affine`),
 * voxels big-endian with channels as frames, and nibabel's 20-byte footer of zeros (TR,
 * flip angle, TE, TI, FoV). `datatype` is stored as {@link MGH_STORED_AS} says, its values
 * rounded and clamped to the requested datatype's range for integer types.
 */
export function encodeMgh(
  file: string,
  input: {
    values: ArrayLike<number>;
    spatial: number[];
    channels: number;
    affine: number[];
    datatype?: string | undefined;
  },
): Uint8Array {
  const req = input.datatype ?? 'float32';
  const storedName = MGH_STORED_AS[req];
  if (!storedName) {
    ioFail(
      file,
      'DATATYPE',
      `cannot write datatype ${JSON.stringify(req)}; one of ${Object.keys(MGH_STORED_AS)
        .map((w) => `'${w}'`)
        .join(', ')}`,
    );
  }
  const stored = datatypeByName(storedName)!;
  const [w, h, d = 1] = input.spatial as [number, number, number?];
  const a = input.affine;
  const delta = columnNorms(a, 3);
  const header = new Uint8Array(MGH_DATA_OFFSET);
  const dv = new DataView(header.buffer);
  dv.setInt32(0, 1, false);
  for (const [i, v] of [w, h, d, input.channels].entries()) dv.setInt32(4 + 4 * i, v, false);
  dv.setInt32(20, MGH_CODES[storedName]!, false);
  dv.setInt32(24, 0, false);
  dv.setInt16(28, 1, false);
  const half = [w / 2, h / 2, d / 2];
  for (let k = 0; k < 3; k++) {
    dv.setFloat32(30 + 4 * k, delta[k]!, false);
    for (let r = 0; r < 3; r++)
      dv.setFloat32(42 + 12 * k + 4 * r, a[r * 4 + k]! / delta[k]!, false);
  }
  for (let r = 0; r < 3; r++) {
    let cr = a[r * 4 + 3]!;
    for (let k = 0; k < 3; k++) cr += a[r * 4 + k]! * half[k]!;
    dv.setFloat32(78 + 4 * r, cr, false);
  }
  const data = encodeStored(
    input.values,
    input.spatial,
    input.channels,
    stored,
    integerRange(req),
    'planar',
    true,
  );
  const out = new Uint8Array(MGH_DATA_OFFSET + data.length + 20);
  out.set(header);
  out.set(data, MGH_DATA_OFFSET);
  return out;
}
