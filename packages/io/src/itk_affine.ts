import { tf } from '@regkit/core';
import { ioFail } from './errors.js';
import { invert } from './matrix.js';
import { nodeFs, writeFileAtomic } from './platform.js';
import type { Volume } from './types.js';
import { checkVolumeArg } from './volume.js';

/**
 * An ITK/ANTs affine transform in physical space (ITK's LPS millimetres), as ITK's
 * `AffineTransform` stores it: T(p) = M (p − c) + c + t, mapping a point p of the FIXED image
 * to the point of the MOVING image where it is sampled (the direction `antsApplyTransforms`
 * and transformix use).
 */
export interface ItkAffine {
  /** 2 or 3 (`AffineTransform_double_2_2` / `_3_3`). */
  dimension: 2 | 3;
  /** M, `dimension` rows of `dimension` numbers. */
  matrix: number[][];
  /** t (ITK's `Translation`, the last `dimension` of `Parameters`). */
  translation: number[];
  /** c (ITK's `FixedParameters`, the centre of rotation). */
  center: number[];
}

/** Options of {@link writeItkAffine}. */
export interface WriteItkAffineOptions {
  /** Replace an existing file (default true); false throws `EXISTS` when it exists. */
  overwrite?: boolean;
}

/**
 * The voxel → ITK physical (LPS mm) map of a grid, homogeneous `(nd + 1) × (nd + 1)` rows:
 * diag(−1, −1, 1) · A in 3D (A = the voxel → RAS affine); in 2D the in-plane block and
 * translation, negated (ITK's 2D axes are LPS x, y), as {@link itkFieldMatrix} of fields.
 */
export function voxelToItkPhysical(affine: readonly number[], nd: number): number[][] {
  const flip = [-1, -1, 1];
  const rows = Array.from({ length: nd }, (_, i) => [
    ...Array.from({ length: nd }, (_, j) => flip[i]! * affine[i * 4 + j]!),
    flip[i]! * affine[i * 4 + 3]!,
  ]);
  rows.push([...Array.from({ length: nd }, () => 0), 1]);
  return rows;
}

function matMul(a: readonly (readonly number[])[], b: readonly (readonly number[])[]): number[][] {
  return a.map((row) => b[0]!.map((_, j) => row.reduce((s, v, k) => s + v * b[k]![j]!, 0)));
}

function voxelRows(fn: string, affine: tf.Tensor | readonly (readonly number[])[]): number[][] {
  let rows: number[][];
  if (affine instanceof tf.Tensor) {
    if (affine.isDisposed) ioFail('', 'OPTION', `${fn}(): 'affine' has been disposed`);
    const [b, nd, cols] = affine.shape;
    if (affine.rank !== 3 || b !== 1 || !(nd === 2 || nd === 3) || cols !== nd + 1) {
      ioFail(
        '',
        'SHAPE',
        `${fn}(): 'affine' must be [1, 2, 3] or [1, 3, 4] (fixed voxel → moving voxel), got [${affine.shape.join(', ')}]`,
      );
    }
    const v = affine.dataSync();
    rows = Array.from({ length: nd }, (_, i) =>
      Array.from({ length: cols }, (_, j) => v[i * cols + j]!),
    );
  } else {
    const nd = Array.isArray(affine) ? affine.length : 0;
    if (
      !(nd === 2 || nd === 3) ||
      !affine.every((r) => Array.isArray(r) && r.length === nd + 1 && r.every(Number.isFinite))
    ) {
      ioFail(
        '',
        'OPTION',
        `${fn}(): 'affine' must be a [1, ndim, ndim + 1] tensor or ndim rows of ndim + 1 finite numbers`,
      );
    }
    rows = affine.map((r) => [...r]);
  }
  if (!rows.flat().every(Number.isFinite)) {
    ioFail('', 'OPTION', `${fn}(): 'affine' has non-finite entries`);
  }
  return rows;
}

function gridOf(fn: string, name: string, v: Volume, nd: number): number[] {
  const spatial = checkVolumeArg(fn, name, v);
  if (spatial.length !== nd) {
    ioFail(
      '',
      'SHAPE',
      `${fn}(): the affine is ${nd}D but '${name}' is ${spatial.length}D [${spatial.join(', ')}]`,
    );
  }
  return spatial;
}

/**
 * Converts a voxel-space affine (regkit's convention: fixed voxel x ↦ moving voxel A x + t,
 * `[1, ndim, ndim + 1]`, as `registerAffine` of `@regkit/register` returns) into ITK's
 * physical-space affine: with G_f, G_m the voxel → LPS maps of the two grids
 * ({@link voxelToItkPhysical}), the point map is W = G_m · [A | t] · G_f⁻¹, written about the
 * centre of the fixed grid (c = G_f · (S − 1)/2, t_ITK = W(c) − c).
 *
 * @param affine `[1, ndim, ndim + 1]` tensor or `ndim` rows of `ndim + 1` numbers, in voxels.
 * @param fixed the grid the affine's inputs are voxels of (the output grid of resampling).
 * @param moving the grid its outputs are voxels of.
 */
export function voxelAffineToItk(
  affine: tf.Tensor | readonly (readonly number[])[],
  fixed: Volume,
  moving: Volume,
): ItkAffine {
  const fn = 'voxelAffineToItk';
  const a = voxelRows(fn, affine);
  const nd = a.length as 2 | 3;
  const spatial = gridOf(fn, 'fixed', fixed, nd);
  gridOf(fn, 'moving', moving, nd);
  const gf = voxelToItkPhysical(fixed.affine, nd);
  const gm = voxelToItkPhysical(moving.affine, nd);
  const gfInv = invert(gf);
  if (!gfInv) ioFail('', 'AFFINE', `${fn}(): the affine of 'fixed' is singular`);
  const w = matMul(matMul(gm, [...a, [...Array.from({ length: nd }, () => 0), 1]]), gfInv);
  const centreVoxel = [...spatial.map((s) => (s - 1) / 2), 1];
  const center = gf.slice(0, nd).map((row) => row.reduce((s, v, k) => s + v * centreVoxel[k]!, 0));
  const matrix = w.slice(0, nd).map((row) => row.slice(0, nd));
  const translation = Array.from(
    { length: nd },
    (_, i) => matrix[i]!.reduce((s, v, k) => s + v * center[k]!, 0) + w[i]![nd]! - center[i]!,
  );
  return { dimension: nd, matrix, translation, center };
}

/**
 * The inverse of {@link voxelAffineToItk}: an ITK physical affine as a voxel-space affine
 * from `fixed`'s voxels to `moving`'s, [A | t] = G_m⁻¹ · W · G_f (W(p) = M p + t + c − M c).
 *
 * @returns `[1, ndim, ndim + 1]` float32 (regkit's convention: fixed voxel x ↦ moving voxel A x + t).
 */
export function itkToVoxelAffine(itk: ItkAffine, fixed: Volume, moving: Volume): tf.Tensor {
  const fn = 'itkToVoxelAffine';
  const nd = checkItk(fn, itk);
  gridOf(fn, 'fixed', fixed, nd);
  gridOf(fn, 'moving', moving, nd);
  const gf = voxelToItkPhysical(fixed.affine, nd);
  const gmInv = invert(voxelToItkPhysical(moving.affine, nd));
  if (!gmInv) ioFail('', 'AFFINE', `${fn}(): the affine of 'moving' is singular`);
  const { matrix: m, translation: t, center: c } = itk;
  const w = m.map((row, i) => [...row, t[i]! + c[i]! - row.reduce((s, v, k) => s + v * c[k]!, 0)]);
  w.push([...Array.from({ length: nd }, () => 0), 1]);
  const a = matMul(matMul(gmInv, w), gf).slice(0, nd);
  return tf.tensor3d([a]);
}

function checkItk(fn: string, itk: ItkAffine): 2 | 3 {
  const nd = itk?.dimension;
  const ok =
    (nd === 2 || nd === 3) &&
    Array.isArray(itk.matrix) &&
    itk.matrix.length === nd &&
    itk.matrix.every((r) => Array.isArray(r) && r.length === nd && r.every(Number.isFinite)) &&
    Array.isArray(itk.translation) &&
    itk.translation.length === nd &&
    itk.translation.every(Number.isFinite) &&
    Array.isArray(itk.center) &&
    itk.center.length === nd &&
    itk.center.every(Number.isFinite);
  if (!ok) {
    ioFail(
      '',
      'OPTION',
      `${fn}(): 'itk' must be { dimension: 2 | 3, matrix (ndim × ndim), translation (ndim), center (ndim) } of finite numbers`,
    );
  }
  return nd;
}

/** Shortest round-trip decimal of a double (ITK reads any C++ `>>` number). */
const num = (x: number) => (Object.is(x, -0) ? '0' : String(x));

/**
 * The bytes of an ITK affine transform file: `'txt'` is ITK's text format
 * (`#Insight Transform File V1.0`, `Transform: AffineTransform_double_3_3`, `Parameters:` the
 * matrix row by row then the translation, `FixedParameters:` the centre); `'mat'` is the
 * MATLAB v4 file ANTs writes (`0GenericAffine.mat`): two little-endian double column
 * vectors, `AffineTransform_double_3_3` (the same parameters) and `fixed` (the centre).
 */
export function encodeItkAffine(itk: ItkAffine, format: 'txt' | 'mat'): Uint8Array {
  const nd = checkItk('encodeItkAffine', itk);
  const name = `AffineTransform_double_${nd}_${nd}`;
  const params = [...itk.matrix.flat(), ...itk.translation];
  if (format === 'txt') {
    const text = [
      '#Insight Transform File V1.0',
      '#Transform 0',
      `Transform: ${name}`,
      `Parameters: ${params.map(num).join(' ')}`,
      `FixedParameters: ${itk.center.map(num).join(' ')}`,
      '',
    ].join('\n');
    return new TextEncoder().encode(text);
  }
  if (format !== 'mat') {
    ioFail('', 'OPTION', `encodeItkAffine(): format must be 'txt' or 'mat', got '${format}'`);
  }
  const vars: [string, number[]][] = [
    [name, params],
    ['fixed', itk.center],
  ];
  const size = vars.reduce((s, [n, v]) => s + 20 + n.length + 1 + 8 * v.length, 0);
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  let o = 0;
  for (const [n, v] of vars) {
    // MATLAB v4 header: type (0 = little-endian, double, full numeric), rows, cols, imagf, namlen
    for (const h of [0, v.length, 1, 0, n.length + 1]) {
      view.setInt32(o, h, true);
      o += 4;
    }
    for (let i = 0; i < n.length; i++) out[o++] = n.charCodeAt(i);
    out[o++] = 0;
    for (const x of v) {
      view.setFloat64(o, x, true);
      o += 8;
    }
  }
  return out;
}

const TRANSFORM_RE = /^(?:AffineTransform|MatrixOffsetTransformBase)_(?:double|float)_([23])_\1$/;

function fromParameters(file: string, type: string, params: number[], fixed: number[]): ItkAffine {
  const m = TRANSFORM_RE.exec(type);
  if (!m) {
    ioFail(
      file,
      'TRANSFORM',
      `transform type '${type}' is not supported (AffineTransform_double_3_3, _2_2, float variants, MatrixOffsetTransformBase_*)`,
    );
  }
  const nd = Number(m[1]) as 2 | 3;
  if (params.length !== nd * nd + nd || !params.every(Number.isFinite)) {
    ioFail(
      file,
      'TRANSFORM',
      `${type} needs ${nd * nd + nd} finite Parameters, got ${params.length}${params.every(Number.isFinite) ? '' : ' (some not finite)'}`,
    );
  }
  const center = fixed.length === 0 ? Array.from({ length: nd }, () => 0) : fixed;
  if (center.length !== nd || !center.every(Number.isFinite)) {
    ioFail(
      file,
      'TRANSFORM',
      `${type} needs ${nd} finite FixedParameters (the centre), got ${fixed.length}`,
    );
  }
  return {
    dimension: nd,
    matrix: Array.from({ length: nd }, (_, i) => params.slice(i * nd, i * nd + nd)),
    translation: params.slice(nd * nd),
    center,
  };
}

function parseText(file: string, text: string): ItkAffine {
  const transforms: { type: string; params?: number[]; fixed?: number[] }[] = [];
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const colon = line.indexOf(':');
    if (colon < 0) ioFail(file, 'TRANSFORM', `unexpected line '${line.slice(0, 60)}'`);
    const key = line.slice(0, colon).trim();
    const value = line.slice(colon + 1).trim();
    const numbers = () => (value ? value.split(/\s+/).map(Number) : []);
    if (key === 'Transform') {
      if (/^CompositeTransform_/.test(value)) continue;
      transforms.push({ type: value });
    } else if (key === 'Parameters' || key === 'FixedParameters') {
      const cur = transforms[transforms.length - 1];
      if (!cur) ioFail(file, 'TRANSFORM', `${key} before any 'Transform:' line`);
      if (key === 'Parameters') cur.params = numbers();
      else cur.fixed = numbers();
    }
  }
  if (transforms.length !== 1) {
    ioFail(
      file,
      'TRANSFORM',
      transforms.length === 0
        ? "no 'Transform:' line: not an ITK transform file (#Insight Transform File V1.0)"
        : `holds ${transforms.length} transforms (${transforms.map((t) => t.type).join(', ')}); one affine is supported`,
    );
  }
  const t = transforms[0]!;
  if (!t.params) ioFail(file, 'TRANSFORM', `'${t.type}' has no Parameters line`);
  return fromParameters(file, t.type, t.params, t.fixed ?? []);
}

function parseMat(file: string, bytes: Uint8Array): ItkAffine {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const vars = new Map<string, number[]>();
  let o = 0;
  while (o < bytes.length) {
    if (o + 20 > bytes.length) ioFail(file, 'TRANSFORM', 'truncated MATLAB v4 header');
    let little = true;
    let type = view.getInt32(o, true);
    if (type < 0 || type > 4052) {
      little = false;
      type = view.getInt32(o, false);
    }
    const mach = Math.floor(type / 1000);
    const prec = Math.floor((type % 100) / 10);
    if ((mach !== 0 && mach !== 1) || type % 10 !== 0 || (prec !== 0 && prec !== 1)) {
      ioFail(file, 'TRANSFORM', `not a MATLAB v4 file of double/float matrices (type ${type})`);
    }
    little = mach === 0;
    const rows = view.getInt32(o + 4, little);
    const cols = view.getInt32(o + 8, little);
    const imag = view.getInt32(o + 12, little);
    const namlen = view.getInt32(o + 16, little);
    const count = rows * cols;
    const bytesPer = prec === 0 ? 8 : 4;
    if (
      rows < 0 ||
      cols < 0 ||
      imag !== 0 ||
      namlen < 1 ||
      namlen > 256 ||
      o + 20 + namlen + count * bytesPer > bytes.length
    ) {
      ioFail(file, 'TRANSFORM', 'corrupt or truncated MATLAB v4 variable');
    }
    o += 20;
    let name = '';
    for (let i = 0; i < namlen && bytes[o + i] !== 0; i++)
      name += String.fromCharCode(bytes[o + i]!);
    o += namlen;
    const values: number[] = [];
    for (let i = 0; i < count; i++, o += bytesPer) {
      values.push(prec === 0 ? view.getFloat64(o, little) : view.getFloat32(o, little));
    }
    vars.set(name, values);
  }
  const names = [...vars.keys()];
  const type = names.find((n) => TRANSFORM_RE.test(n));
  if (!type) {
    ioFail(
      file,
      'TRANSFORM',
      `no AffineTransform_* / MatrixOffsetTransformBase_* variable (found: ${names.join(', ') || 'none'})`,
    );
  }
  return fromParameters(file, type, vars.get(type)!, vars.get('fixed') ?? []);
}

/**
 * Parses the bytes of an ITK affine transform file: the text format (`.txt`/`.tfm`,
 * `#Insight Transform File V1.0`; one `AffineTransform_double_3_3`/`_2_2`, float or
 * `MatrixOffsetTransformBase` variants, possibly inside a `CompositeTransform`) or ANTs'
 * MATLAB v4 `.mat` (detected from the bytes). Throws `TRANSFORM` naming `name` otherwise.
 */
export function decodeItkAffine(bytes: Uint8Array, name = '<bytes>'): ItkAffine {
  const head = new TextDecoder().decode(bytes.subarray(0, 256));
  if (/^\s*#/.test(head) || /Transform\s*:/.test(head)) {
    return parseText(name, new TextDecoder().decode(bytes));
  }
  return parseMat(name, bytes);
}

function formatOf(path: string): 'txt' | 'mat' {
  const lower = path.toLowerCase();
  if (lower.endsWith('.mat')) return 'mat';
  if (lower.endsWith('.txt') || lower.endsWith('.tfm')) return 'txt';
  return ioFail(
    path,
    'PATH',
    'an ITK affine file must end with .txt or .tfm (ITK text) or .mat (ANTs MATLAB v4)',
  );
}

/**
 * Writes a voxel-space affine (fixed voxel x ↦ moving voxel A x + t, `[1, ndim, ndim + 1]`)
 * as an ITK/ANTs affine transform file, converted to physical LPS space by
 * {@link voxelAffineToItk}: `.txt`/`.tfm` → ITK text, `.mat` → ANTs' MATLAB v4 format (both
 * read by `antsApplyTransforms -t`, ITK's `TransformFileReader` and SimpleITK's
 * `ReadTransform`). Atomic (temporary file, then a rename).
 *
 * @returns the ITK transform that was written.
 */
export async function writeItkAffine(
  path: string,
  affine: tf.Tensor | readonly (readonly number[])[],
  fixed: Volume,
  moving: Volume,
  opts: WriteItkAffineOptions = {},
): Promise<ItkAffine> {
  const format = formatOf(path);
  const itk = voxelAffineToItk(affine, fixed, moving);
  await writeFileAtomic(path, encodeItkAffine(itk, format), opts.overwrite ?? true);
  return itk;
}

/**
 * Reads an ITK/ANTs affine transform file (`.txt`/`.tfm` ITK text or ANTs `.mat`; the
 * format is detected from the bytes) as an {@link ItkAffine} in physical LPS space;
 * {@link itkToVoxelAffine} turns it into regkit's voxel convention for two grids.
 */
export async function readItkAffine(path: string): Promise<ItkAffine> {
  const fs = await nodeFs(path);
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(await fs.readFile(path));
  } catch (e) {
    const code = (e as { code?: string }).code;
    return ioFail(
      path,
      code === 'ENOENT' ? 'NOTFOUND' : 'IO',
      code === 'ENOENT' ? 'no such file' : `cannot read: ${(e as Error).message}`,
    );
  }
  return decodeItkAffine(bytes, path);
}
