/**
 * The blocked (tiled) transposes of reading (NIfTI x-fastest storage → `[nx, ny, nz, C]`) and
 * writing (the reverse, with integer rounding/clamping and the ITK field mix) against the
 * plain loops they replaced, written out here as references: bit-identical on sizes that are
 * not multiples of the tile (37×23×19, 70×5×3, 2D 37×23), 1, 3 and 2×3 channels, every
 * datatype, scaled and unscaled; chunked writing; and read(write(x)) = x.
 */
import { initBackend, tf } from '@regkit/core';
import {
  defaultHeader,
  encodeDisplacementField,
  encodeNifti,
  encodeNiftiChunks,
  itkFieldMatrix,
  type NiftiWriteDatatype,
  readNifti,
  type Volume,
} from '@regkit/io';
import { beforeAll, describe, expect, it } from 'vitest';
import { makeAffine } from './helpers.js';

beforeAll(async () => {
  expect(await initBackend('cpu')).toBe('cpu');
});

/** Deterministic uniform [0, 1) (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Dtype = NiftiWriteDatatype | 'int64';
const DTYPES: Record<Dtype, { code: number; bytes: number; range?: [number, number] }> = {
  uint8: { code: 2, bytes: 1, range: [0, 255] },
  int16: { code: 4, bytes: 2, range: [-32768, 32767] },
  int32: { code: 8, bytes: 4, range: [-2147483648, 2147483647] },
  float32: { code: 16, bytes: 4 },
  float64: { code: 64, bytes: 8 },
  int8: { code: 256, bytes: 1, range: [-128, 127] },
  uint16: { code: 512, bytes: 2, range: [0, 65535] },
  uint32: { code: 768, bytes: 4, range: [0, 4294967295] },
  int64: { code: 1024, bytes: 8, range: [-(2 ** 40), 2 ** 40] },
};

/** Typed array of `name` over `buffer` (little-endian host, as the package assumes). */
function typed(name: Dtype, buffer: ArrayBufferLike, offset: number, n: number) {
  switch (name) {
    case 'uint8':
      return new Uint8Array(buffer, offset, n);
    case 'int8':
      return new Int8Array(buffer, offset, n);
    case 'int16':
      return new Int16Array(buffer, offset, n);
    case 'uint16':
      return new Uint16Array(buffer, offset, n);
    case 'int32':
      return new Int32Array(buffer, offset, n);
    case 'uint32':
      return new Uint32Array(buffer, offset, n);
    case 'float64':
      return new Float64Array(buffer, offset, n);
    case 'int64':
      return new BigInt64Array(buffer, offset, n);
    default:
      return new Float32Array(buffer, offset, n);
  }
}

/** Stored values of `name`: random over (a part of) the range, plus ±0, NaN, ±Inf for floats. */
function storedValues(name: Dtype, n: number, seed: number): number[] {
  const r = rng(seed);
  const range = DTYPES[name].range;
  return Array.from({ length: n }, (_, i) => {
    if (range) {
      // a third of the values near the range ends (int32/uint32/int64 beyond 2^24)
      const [lo, hi] = range;
      const u = r();
      if (i % 3 === 0) return u < 0.5 ? lo + Math.floor(u * 8) : hi - Math.floor(u * 8);
      return Math.floor(lo + u * (hi - lo));
    }
    const special = [0, -0, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY];
    if (i % 97 === 5) return special[((i / 97) % special.length) | 0]!;
    return (r() - 0.5) * 2000;
  });
}

/** A NIfTI-1 `.nii` (352-byte header, sform = identity) with `values` in storage order. */
function niftiBytes(
  dims: number[],
  name: Dtype,
  values: number[],
  slope = 1,
  inter = 0,
): Uint8Array {
  const { code, bytes } = DTYPES[name];
  const out = new Uint8Array(352 + values.length * bytes);
  const dv = new DataView(out.buffer);
  dv.setInt32(0, 348, true);
  const d = [...dims, 1, 1, 1, 1, 1, 1, 1].slice(0, 7);
  dv.setInt16(40, dims.length, true);
  for (let i = 0; i < 7; i++) dv.setInt16(42 + 2 * i, d[i]!, true);
  dv.setInt16(70, code, true);
  dv.setInt16(72, bytes * 8, true);
  for (let i = 0; i < 8; i++) dv.setFloat32(76 + 4 * i, 1, true);
  dv.setFloat32(108, 352, true);
  dv.setFloat32(112, slope, true);
  dv.setFloat32(116, inter, true);
  out[123] = 2;
  dv.setInt16(254, 1, true); // sform_code
  for (let i = 0; i < 3; i++) dv.setFloat32(280 + 16 * i + 4 * i, 1, true);
  out.set([0x6e, 0x2b, 0x31, 0], 344);
  const store = typed(name, out.buffer, 352, values.length);
  for (let i = 0; i < values.length; i++) {
    if (store instanceof BigInt64Array) store[i] = BigInt(values[i]!);
    else store[i] = values[i]!;
  }
  return out;
}

/** The old reading loop: storage (x fastest, blocks 4..7 in Fortran order) → `[nx, ny, nz, C]`. */
function referenceDecode(
  s: ArrayLike<number>,
  dims: number[],
  slope: number,
  inter: number,
): Float32Array {
  const [nx, ny, nz, n4 = 1, n5 = 1, n6 = 1, n7 = 1] = dims as [number, number, number];
  const nxy = nx * ny;
  const nvox = nxy * nz;
  const C = n4 * n5 * n6 * n7;
  const scaled = slope !== 1 || inter !== 0;
  const out = new Float32Array(nvox * C);
  for (let c = 0; c < C; c++) {
    const i7 = c % n7;
    const i6 = Math.floor(c / n7) % n6;
    const i5 = Math.floor(c / (n7 * n6)) % n5;
    const i4 = Math.floor(c / (n7 * n6 * n5));
    const base = nvox * (i4 + n4 * (i5 + n5 * (i6 + n6 * i7)));
    const jStride = nz * C;
    const iStride = ny * jStride;
    for (let k = 0; k < nz; k++) {
      for (let j = 0; j < ny; j++) {
        let si = base + nx * j + nxy * k;
        let o = j * jStride + k * C + c;
        for (let i = 0; i < nx; i++, si++, o += iStride) {
          out[o] = scaled ? s[si]! * slope + inter : s[si]!;
        }
      }
    }
  }
  return out;
}

/**
 * The old writing loop: row-major `[nx, ny, nz, C]` → storage planes k + nz·(t + nt·v), x
 * fastest (channel c = t·nv + v); integers rounded and clamped; `mix` channel mixing.
 */
function referenceEncode(
  src: ArrayLike<number>,
  spatial: number[],
  C: number,
  nt: number,
  nv: number,
  name: NiftiWriteDatatype,
  mix?: number[][],
): Uint8Array {
  const [nx, ny, nz = 1] = spatial as [number, number, number?];
  const buf = new ArrayBuffer(nx * ny * nz * C * DTYPES[name].bytes);
  const storage = typed(name, buf, 0, nx * ny * nz * C) as Float32Array;
  const range = DTYPES[name].range;
  const jStride = nz * C;
  const iStride = ny * jStride;
  for (let p = 0; p < nz * nt * nv; p++) {
    const k = p % nz;
    const b = (p - k) / nz;
    const t = b % nt;
    const v = (b - t) / nt;
    const c = t * nv + v;
    for (let j = 0; j < ny; j++) {
      let di = p * nx * ny + nx * j;
      let si = j * jStride + k * C + c;
      for (let i = 0; i < nx; i++, di++, si += iStride) {
        if (range) {
          storage[di] = Math.min(range[1], Math.max(range[0], Math.round(src[si]!)));
        } else if (mix) {
          let acc = mix[c]![0]! * src[si - c]!;
          for (let q = 1; q < C; q++) acc += mix[c]![q]! * src[si - c + q]!;
          storage[di] = acc;
        } else {
          storage[di] = src[si]!;
        }
      }
    }
  }
  return new Uint8Array(buf);
}

/** Bit-for-bit equality of two float32 arrays (NaN payloads included) or byte arrays. */
function expectSameBits(
  got: Float32Array | Uint8Array,
  want: Float32Array | Uint8Array,
  what: string,
) {
  const g = new Uint8Array(got.buffer, got.byteOffset, got.byteLength);
  const w = new Uint8Array(want.buffer, want.byteOffset, want.byteLength);
  expect(g.length, `${what}: length`).toBe(w.length);
  for (let i = 0; i < w.length; i++) {
    if (g[i] !== w[i]) expect.fail(`${what}: byte ${i} differs (${g[i]} vs ${w[i]})`);
  }
}

/** [dims (NIfTI dim[1..]), what]: 3D, 4D with 3 channels, 5D 2×3, 2D, and nx > 2 tiles. */
const SHAPES: [number[], string][] = [
  [[37, 23, 19], '37×23×19, C = 1'],
  [[37, 23, 19, 3], '37×23×19, C = 3'],
  [[37, 23, 19, 2, 3], '37×23×19×2×3 (5D), C = 6'],
  [[37, 23, 1], '2D 37×23, C = 1'],
  [[37, 23, 1, 3], '2D 37×23, C = 3'],
  [[70, 5, 3, 2], '70×5×3, C = 2'],
];

describe('reading: the tiled transpose equals the plain loop, bit for bit', () => {
  const cases: [Dtype, number, number][] = [
    ['float32', 1, 0],
    ['float32', 0.37, -12.5],
    ['int16', 1, 0],
    ['int16', 0.37, -12.5],
    ['uint8', 2, 0],
    ['int8', 1, 0],
    ['uint16', 1, 3],
    ['int32', 1, 0],
    ['uint32', -0.5, 1],
    ['float64', 1, 0],
    ['float64', 1.5, 0.25],
    ['int64', 1, 0],
  ];
  for (const [dims, what] of SHAPES) {
    for (const [name, slope, inter] of cases) {
      const scaling = slope === 1 && inter === 0 ? 'unscaled' : `× ${slope} + ${inter}`;
      it(`${what}, ${name}, ${scaling}`, async () => {
        const n = dims.reduce((a, b) => a * b, 1);
        const values = storedValues(name, n, n + DTYPES[name].code);
        const bytes = niftiBytes(dims, name, values, slope, inter);
        const vol = await readNifti(bytes, { name: 'x.nii' });
        const spatial = dims[2] === 1 ? dims.slice(0, 2) : dims.slice(0, 3);
        const C = dims.slice(3).reduce((a, b) => a * b, 1);
        expect(vol.data.shape).toEqual([1, ...spatial, C]);
        // the stored values as the reader sees them (int64 → number, as the package)
        const stored = typed(name, bytes.buffer, 352, n);
        const s = stored instanceof BigInt64Array ? Array.from(stored, Number) : stored;
        const want = referenceDecode(
          s,
          [...dims, 1, 1, 1, 1].slice(0, 7),
          Math.fround(slope),
          Math.fround(inter),
        );
        expectSameBits(vol.data.dataSync() as Float32Array, want, `${what} ${name}`);
        vol.data.dispose();
      });
    }
  }
});

describe('writing: the tiled transpose equals the plain loop, bit for bit', () => {
  const names: NiftiWriteDatatype[] = [
    'float32',
    'float64',
    'uint8',
    'int8',
    'int16',
    'uint16',
    'int32',
    'uint32',
  ];
  for (const [dims, what] of SHAPES) {
    const spatial = dims[2] === 1 ? dims.slice(0, 2) : dims.slice(0, 3);
    const C = dims.slice(3).reduce((a, b) => a * b, 1);
    const n = spatial.reduce((a, b) => a * b, 1) * C;
    for (const name of names) {
      it(`${what}, ${name}`, () => {
        // values across and beyond the integer ranges, halves (rounding), NaN, ±0, ±Inf
        const r = rng(n + name.length);
        const x = new Float32Array(n);
        for (let i = 0; i < n; i++) {
          const u = r();
          x[i] = i % 11 === 0 ? Math.round(u * 40) / 2 - 10 : (u - 0.3) * 3 * 2 ** (i % 33);
        }
        x[1] = Number.NaN;
        x[2] = -0;
        x[3] = Number.POSITIVE_INFINITY;
        x[4] = Number.NEGATIVE_INFINITY;
        const data = tf.tensor(x, [1, ...spatial, C]);
        const vol = {
          data,
          affine: makeAffine(
            [
              [1, 0, 0],
              [0, 1, 0],
              [0, 0, 1],
            ],
            [0, 0, 0],
          ),
        };
        const bytes = encodeNifti(vol, { datatype: name });
        const want = referenceEncode(x, spatial, C, C, 1, name);
        expectSameBits(bytes.subarray(352), want, `${what} ${name}`);
        // chunked: 3 planes per piece, so pieces start inside a channel's planes
        const planeBytes = spatial[0]! * spatial[1]! * DTYPES[name].bytes;
        const { chunks } = encodeNiftiChunks(vol, { datatype: name, chunkBytes: 3 * planeBytes });
        const pieces = [...chunks()];
        const joined = new Uint8Array(pieces.reduce((a, p) => a + p.length, 0));
        let off = 0;
        for (const p of pieces) {
          joined.set(p, off);
          off += p.length;
        }
        expectSameBits(joined, bytes, `${what} ${name} chunked`);
        data.dispose();
      });
    }
  }

  it('ITK displacement fields (the channel mix), 3D 37×23×19 and 2D 37×23', () => {
    const c30 = Math.cos(Math.PI / 6);
    const s30 = Math.sin(Math.PI / 6);
    const affine = makeAffine(
      [
        [1.5 * c30, -2 * s30, 0.1],
        [1.5 * s30, 2 * c30, 0],
        [0, 0.2, -2.5],
      ],
      [-20.5, 13.25, 60],
    );
    for (const spatial of [
      [37, 23, 19],
      [37, 23],
    ]) {
      const nd = spatial.length;
      const n = spatial.reduce((a, b) => a * b, 1) * nd;
      const r = rng(n);
      const u = new Float32Array(n);
      for (let i = 0; i < n; i++) u[i] = (r() - 0.5) * 7;
      const field = tf.tensor(u, [1, ...spatial, nd]);
      const reference: Volume = {
        data: tf.zeros([1, ...spatial, 1]),
        affine,
        spacing: spatial.map(() => 1),
        header: defaultHeader(spatial, 1),
        warnings: [],
      };
      const bytes = encodeDisplacementField(field, reference);
      const want = referenceEncode(u, spatial, nd, 1, nd, 'float32', itkFieldMatrix(affine, nd));
      expectSameBits(bytes.subarray(bytes.length - want.length), want, `${nd}D field`);
      tf.dispose([field, reference.data]);
    }
  });
});

describe('read(write(x)) = x', () => {
  for (const [dims, what] of SHAPES) {
    it(`${what}: values, and the bytes of a file read then written again`, async () => {
      const n = dims.reduce((a, b) => a * b, 1);
      const values = storedValues('float32', n, n);
      const file = niftiBytes(dims, 'float32', values);
      const vol = await readNifti(file, { name: 'x.nii' });
      // written again with the header's dims (5D stays 5D): the same voxel bytes
      const again = encodeNifti(vol);
      expectSameBits(again.subarray(352), file.subarray(352), `${what}: voxels rewritten`);
      const back = await readNifti(again, { name: 'y.nii' });
      expect(back.data.shape).toEqual(vol.data.shape);
      expectSameBits(
        back.data.dataSync() as Float32Array,
        vol.data.dataSync() as Float32Array,
        `${what}: read(write(x))`,
      );
      // integers through int16
      const x = vol.data.dataSync();
      const ints = tf.tensor(
        Float32Array.from(x, (v) => (Number.isFinite(v) ? Math.round(Math.sin(v) * 1000) + 0 : 7)),
        vol.data.shape,
      );
      const viaInt = await readNifti(encodeNifti({ ...vol, data: ints }, { datatype: 'int16' }));
      expectSameBits(
        viaInt.data.dataSync() as Float32Array,
        ints.dataSync() as Float32Array,
        `${what}: int16 read(write(x))`,
      );
      tf.dispose([vol.data, back.data, ints, viaInt.data]);
    });
  }
});
