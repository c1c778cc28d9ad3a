/**
 * Fuzzing readNifti: a few hundred seeded mutations of small valid files (.nii NIfTI-1 and
 * NIfTI-2, .nii.gz, and .hdr/.img pairs: NIfTI-1 `ni1`, gzip-compressed pairs, Analyze 7.5):
 * header bytes flipped, random dims / datatype / vox_offset / scaling / orientation fields
 * (and Analyze's SPM origin, glmax/glmin, cal_max/cal_min), truncation, garbage appended,
 * gzip corruption, image files truncated, emptied or missing. Every call must either succeed
 * or throw a RegkitIOError (message starting with the file name) within 10 s (a hang guard),
 * successful reads hold at most `maxVoxels` values, and the process's ArrayBuffer memory stays
 * bounded (a header cannot make the reader allocate what its budget forbids).
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initBackend, mulberry32, tf } from '@regkit/core';
import { RegkitIOError, readNifti } from '@regkit/io';
import { gunzipSync, gzipSync } from 'fflate';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fixtureBytes, tempDir } from './helpers.js';

beforeAll(async () => {
  expect(await initBackend('cpu')).toBe('cpu');
});

const SEED = 20240613;
const CASES_PER_BASE = 120;

type Mutation = { name: string; apply: (b: Uint8Array, r: () => number) => Uint8Array };

const int = (r: () => number, lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));
const pick = <T>(r: () => number, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
const WEIRD_INTS = [0, 1, -1, 2, 3, 7, 8, 255, 256, 32767, -32768, 65535, 2 ** 31 - 1, -(2 ** 31)];
const WEIRD_FLOATS = [
  0,
  -0,
  1,
  -1,
  0.5,
  352,
  351,
  353.5,
  1e9,
  -1e9,
  1e38,
  Number.NaN,
  Number.POSITIVE_INFINITY,
  Number.NEGATIVE_INFINITY,
  2 ** 31,
  4096,
];

function xorAt(b: Uint8Array, i: number, mask: number): void {
  b[i] = (b[i] ?? 0) ^ mask;
}

function headerSize(b: Uint8Array): number {
  return new DataView(b.buffer, b.byteOffset).getInt32(0, true) === 540 ? 540 : 348;
}

/** Offsets of typed header fields, per version. */
function fields(v2: boolean) {
  return v2
    ? {
        dims: { at: 16, n: 8, size: 8 },
        datatype: 12,
        bitpix: 14,
        voxOffset: { at: 168, size: 8 },
        slope: { at: 176, size: 8 },
        inter: { at: 184, size: 8 },
        qcode: { at: 344, size: 4 },
        scode: { at: 348, size: 4 },
        quat: { at: 352, size: 8 },
        srow: { at: 400, size: 8 },
        pixdim: { at: 104, size: 8 },
      }
    : {
        dims: { at: 40, n: 8, size: 2 },
        datatype: 70,
        bitpix: 72,
        voxOffset: { at: 108, size: 4 },
        slope: { at: 112, size: 4 },
        inter: { at: 116, size: 4 },
        qcode: { at: 252, size: 2 },
        scode: { at: 254, size: 2 },
        quat: { at: 256, size: 4 },
        srow: { at: 280, size: 4 },
        pixdim: { at: 76, size: 4 },
      };
}

function setInt(b: Uint8Array, at: number, size: number, v: number): void {
  const dv = new DataView(b.buffer, b.byteOffset);
  if (size === 2) dv.setInt16(at, v, true);
  else if (size === 4) dv.setInt32(at, v, true);
  else dv.setBigInt64(at, BigInt(Math.trunc(v)), true);
}

function setFloat(b: Uint8Array, at: number, size: number, v: number): void {
  const dv = new DataView(b.buffer, b.byteOffset);
  if (size === 4) dv.setFloat32(at, v, true);
  else dv.setFloat64(at, v, true);
}

const HEADER_MUTATIONS: Mutation[] = [
  {
    name: 'flip header bytes',
    apply: (b, r) => {
      const out = b.slice();
      const n = int(r, 1, 8);
      for (let i = 0; i < n; i++) xorAt(out, int(r, 0, headerSize(b) - 1), 1 << int(r, 0, 7));
      return out;
    },
  },
  {
    name: 'random dims',
    apply: (b, r) => {
      const out = b.slice();
      const f = fields(headerSize(b) === 540).dims;
      const n = int(r, 1, 3);
      for (let i = 0; i < n; i++) {
        const v = r() < 0.5 ? pick(r, WEIRD_INTS) : int(r, -5, 40);
        setInt(out, f.at + f.size * int(r, 0, f.n - 1), f.size, f.size === 2 ? (v << 16) >> 16 : v);
      }
      return out;
    },
  },
  {
    name: 'random datatype/bitpix',
    apply: (b, r) => {
      const out = b.slice();
      const f = fields(headerSize(b) === 540);
      const codes = [
        0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024, 1280, 1536, 1792, 2048, 2304, 3, -1,
        32767,
      ];
      setInt(out, f.datatype, 2, pick(r, codes));
      if (r() < 0.5) setInt(out, f.bitpix, 2, pick(r, [0, 1, 8, 16, 32, 64, -8, 7]));
      return out;
    },
  },
  {
    name: 'random vox_offset',
    apply: (b, r) => {
      const out = b.slice();
      const f = fields(headerSize(b) === 540).voxOffset;
      const v = r() < 0.6 ? pick(r, WEIRD_FLOATS) : int(r, 0, b.length + 100);
      if (f.size === 4) setFloat(out, f.at, 4, v);
      else setInt(out, f.at, 8, Number.isFinite(v) ? v : -1);
      return out;
    },
  },
  {
    name: 'random scaling / orientation fields',
    apply: (b, r) => {
      const out = b.slice();
      const f = fields(headerSize(b) === 540);
      const which = int(r, 0, 5);
      if (which === 0) setFloat(out, f.slope.at, f.slope.size, pick(r, WEIRD_FLOATS));
      if (which === 1) setFloat(out, f.inter.at, f.inter.size, pick(r, WEIRD_FLOATS));
      if (which === 2) {
        setInt(out, f.qcode.at, f.qcode.size, pick(r, [0, 1, 2, 5, 6, -1, 1000]));
        setInt(out, f.scode.at, f.scode.size, pick(r, [0, 1, 2, 5, 6, -1, 1000]));
      }
      if (which === 3) {
        setInt(out, f.scode.at, f.scode.size, 0);
        setInt(out, f.qcode.at, f.qcode.size, 1);
        setFloat(out, f.quat.at + f.quat.size * int(r, 0, 5), f.quat.size, pick(r, WEIRD_FLOATS));
      }
      if (which === 4)
        setFloat(out, f.srow.at + f.srow.size * int(r, 0, 11), f.srow.size, pick(r, WEIRD_FLOATS));
      if (which === 5) {
        setInt(out, f.scode.at, f.scode.size, 0);
        setInt(out, f.qcode.at, f.qcode.size, r() < 0.5 ? 0 : 1);
        setFloat(
          out,
          f.pixdim.at + f.pixdim.size * int(r, 0, 7),
          f.pixdim.size,
          pick(r, WEIRD_FLOATS),
        );
      }
      return out;
    },
  },
  {
    name: 'truncate',
    apply: (b, r) => b.slice(0, int(r, 0, b.length - 1)),
  },
  {
    name: 'append garbage',
    apply: (b, r) => {
      const extra = new Uint8Array(int(r, 1, 5000));
      for (let i = 0; i < extra.length; i++) extra[i] = int(r, 0, 255);
      const out = new Uint8Array(b.length + extra.length);
      out.set(b);
      out.set(extra, b.length);
      return out;
    },
  },
  {
    name: 'flip any byte',
    apply: (b, r) => {
      const out = b.slice();
      for (let i = 0; i < int(r, 1, 20); i++) out[int(r, 0, b.length - 1)] = int(r, 0, 255);
      return out;
    },
  },
];

const GZ_DATE = new Date(Date.UTC(2020, 0, 1));
const gz = (b: Uint8Array) => gzipSync(b, { mtime: GZ_DATE });

const GZIP_MUTATIONS: Mutation[] = [
  ...HEADER_MUTATIONS.map((m) => ({
    name: `gzip(${m.name})`,
    apply: (b: Uint8Array, r: () => number) => {
      let raw: Uint8Array;
      try {
        raw = gunzipSync(b);
      } catch {
        return b; // an earlier mutation broke the stream: keep it as it is
      }
      return gz(m.apply(raw, r));
    },
  })),
  {
    name: 'corrupt gzip body',
    apply: (b, r) => {
      const out = b.slice();
      for (let i = 0; i < int(r, 1, 10); i++)
        xorAt(out, int(r, 10, b.length - 1), 1 << int(r, 0, 7));
      return out;
    },
  },
  {
    name: 'corrupt gzip header/trailer',
    apply: (b, r) => {
      const out = b.slice();
      const at = r() < 0.5 ? int(r, 0, 9) : int(r, b.length - 8, b.length - 1);
      out[at] = int(r, 0, 255);
      return out;
    },
  },
  { name: 'truncate gzip', apply: (b, r) => b.slice(0, int(r, 2, b.length - 1)) },
  {
    name: 'gzip + garbage / second member',
    apply: (b, r) => {
      const tail =
        r() < 0.5
          ? gz(new Uint8Array(int(r, 1, 3000)).map(() => int(r, 0, 255)))
          : new Uint8Array(int(r, 1, 500)).map(() => int(r, 0, 255));
      const out = new Uint8Array(b.length + tail.length);
      out.set(b);
      out.set(tail, b.length);
      return out;
    },
  },
  {
    name: 'gzip bomb-ish: huge dims, lots of zeros',
    apply: (b, r) => {
      let raw: Uint8Array;
      try {
        raw = gunzipSync(b);
      } catch {
        return b;
      }
      const big = new Uint8Array(raw.length + int(r, 1, 4) * 1_000_000);
      big.set(raw);
      return gz(big);
    },
  },
];

const BASES: Array<{ name: string; bytes: () => Uint8Array; mutations: Mutation[] }> = [
  {
    name: 'nifti1.nii',
    bytes: () => gunzipSync(fixtureBytes('dt_float32.nii.gz')),
    mutations: HEADER_MUTATIONS,
  },
  {
    name: 'nifti2.nii',
    bytes: () => fixtureBytes('nifti2_float32.nii'),
    mutations: HEADER_MUTATIONS,
  },
  {
    name: 'int16_scaled.nii.gz',
    bytes: () => fixtureBytes('dt_int16_scaled.nii.gz'),
    mutations: GZIP_MUTATIONS,
  },
];

describe('readNifti fuzz (seeded)', () => {
  it.each(BASES)(
    '$name: every mutation reads or throws RegkitIOError within 10 s',
    async (base) => {
      const before = tf.memory().numTensors;
      const r = mulberry32(SEED + base.name.length);
      const original = base.bytes();
      const outcomes: Record<string, number> = {};
      for (let n = 0; n < CASES_PER_BASE; n++) {
        let bytes = original;
        const applied: string[] = [];
        const rounds = r() < 0.25 ? 2 : 1;
        for (let k = 0; k < rounds; k++) {
          const m = pick(r, base.mutations);
          applied.push(m.name);
          bytes = m.apply(bytes, r);
        }
        const name = `fuzz-${base.name}-${n}`;
        const t0 = performance.now();
        let outcome: string;
        try {
          const vol = await readNifti(bytes, { name, maxVoxels: 4096 });
          vol.data.dispose();
          outcome = 'ok';
        } catch (e) {
          if (!(e instanceof RegkitIOError)) {
            throw new Error(
              `case ${n} (${applied.join(' + ')}): ${String(e)}\n${(e as Error).stack}`,
            );
          }
          expect(e.message.startsWith(`${name}: `), e.message).toBe(true);
          outcome = e.code;
        }
        const ms = performance.now() - t0;
        // a hang guard, not a speed target: generous enough for a loaded CI machine
        expect(ms, `case ${n} (${applied.join(' + ')}) took ${ms.toFixed(0)} ms`).toBeLessThan(
          10_000,
        );
        outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
      }
      console.log(`${base.name}: ${JSON.stringify(outcomes)}`);
      expect(tf.memory().numTensors).toBe(before);
    },
  );
});

describe('gzip bombs', () => {
  it('a small header followed by 64 MB of zeros is read by inflating only the bytes it needs', async () => {
    const raw = gunzipSync(fixtureBytes('dt_int16_scaled.nii.gz'));
    const bomb = new Uint8Array(raw.length + 64 * 1024 * 1024);
    bomb.set(raw);
    const packed = gzipSync(bomb, { level: 9, mtime: GZ_DATE });
    expect(packed.length).toBeLessThan(200_000);
    const vol = await readNifti(packed, { name: 'bomb.nii.gz' });
    expect(vol.data.shape).toEqual([1, 5, 4, 3, 1]);
    vol.data.dispose();
    // it stops inflating once it has the voxels: a stream whose tail (megabytes of zeros
    // later) is corrupt still reads, which a full decompression would refuse
    const torn = packed.slice();
    for (let i = torn.length - 2000; i < torn.length - 8; i++) torn[i] = 0xff;
    expect(() => gunzipSync(torn)).toThrow();
    const early = await readNifti(torn, { name: 'torn-bomb.nii.gz' });
    expect(early.data.shape).toEqual([1, 5, 4, 3, 1]);
    early.data.dispose();
    // the same stream claiming 4096³ voxels is refused from its header alone
    const dv = new DataView(bomb.buffer);
    for (const at of [42, 44, 46]) dv.setInt16(at, 4096, true);
    const e = await readNifti(gzipSync(bomb.subarray(0, 100_000), { mtime: GZ_DATE }), {
      name: 'b.nii.gz',
    }).catch((x) => x);
    expect(e).toBeInstanceOf(RegkitIOError);
    expect(e.code).toBe('BUDGET');
  });
});

// ---------------------------------------------------------------------------------------
// .hdr/.img pairs and Analyze 7.5

const pairBytes = (f: string) =>
  new Uint8Array(readFileSync(fileURLToPath(new URL(`./fixtures/pairs/${f}`, import.meta.url))));

interface Pair {
  hdr: Uint8Array;
  img: Uint8Array;
  /** path-based cases: which file to name, and whether the partner is deleted */
  dropPartner?: boolean;
}
type PairMutation = { name: string; apply: (p: Pair, r: () => number) => Pair };

const ANALYZE_MUTATIONS: Mutation[] = [
  {
    name: 'analyze origin / gl / cal / funused',
    apply: (b, r) => {
      const out = b.slice();
      const dv = new DataView(out.buffer, out.byteOffset);
      const which = int(r, 0, 3);
      if (which === 0)
        for (const o of [253, 255, 257]) dv.setInt16(o, (pick(r, WEIRD_INTS) << 16) >> 16, true);
      if (which === 1) {
        dv.setInt32(140, pick(r, WEIRD_INTS), true);
        dv.setInt32(144, pick(r, WEIRD_INTS), true);
        dv.setFloat32(112, 0, true);
      }
      if (which === 2) {
        dv.setFloat32(124, pick(r, WEIRD_FLOATS), true);
        dv.setFloat32(128, pick(r, WEIRD_FLOATS), true);
        dv.setFloat32(112, pick(r, [0, Number.NaN]), true);
      }
      if (which === 3) dv.setFloat32(116, pick(r, WEIRD_FLOATS), true);
      return out;
    },
  },
];

function onHeader(m: Mutation): PairMutation {
  return {
    name: `hdr: ${m.name}`,
    apply: (p, r) => {
      try {
        return { ...p, hdr: m.apply(p.hdr, r) };
      } catch {
        return p; // a field mutation of an already truncated header: keep it as it is
      }
    },
  };
}

const IMAGE_MUTATIONS: PairMutation[] = [
  {
    name: 'img: truncate',
    apply: (p, r) => ({ ...p, img: p.img.slice(0, int(r, 0, p.img.length)) }),
  },
  { name: 'img: empty', apply: (p) => ({ ...p, img: new Uint8Array(0) }) },
  {
    name: 'img: flip bytes',
    apply: (p, r) => {
      const img = p.img.slice();
      for (let i = 0; i < int(r, 1, 20) && img.length > 0; i++)
        img[int(r, 0, img.length - 1)] = int(r, 0, 255);
      return { ...p, img };
    },
  },
  {
    name: 'img: append garbage',
    apply: (p, r) => {
      const img = new Uint8Array(p.img.length + int(r, 1, 3000));
      img.set(p.img);
      for (let i = p.img.length; i < img.length; i++) img[i] = int(r, 0, 255);
      return { ...p, img };
    },
  },
  { name: 'missing partner', apply: (p) => ({ ...p, dropPartner: true }) },
];

/** Mutations of a gzip pair: the raw bytes are mutated and recompressed, or the streams broken. */
function gzipPair(ms: PairMutation[]): PairMutation[] {
  return [
    ...ms.map((m) => ({
      name: `gzip(${m.name})`,
      apply: (p: Pair, r: () => number) => {
        let raw: Pair;
        try {
          raw = { ...p, hdr: gunzipSync(p.hdr), img: gunzipSync(p.img) };
        } catch {
          return p;
        }
        const out = m.apply(raw, r);
        return { ...out, hdr: gz(out.hdr), img: gz(out.img) };
      },
    })),
    ...GZIP_MUTATIONS.filter((m) => !m.name.startsWith('gzip(')).flatMap((m) => [
      {
        name: `hdr: ${m.name}`,
        apply: (p: Pair, r: () => number) => ({ ...p, hdr: m.apply(p.hdr, r) }),
      },
      {
        name: `img: ${m.name}`,
        apply: (p: Pair, r: () => number) => ({ ...p, img: m.apply(p.img, r) }),
      },
    ]),
  ];
}

const RAW_PAIR_MUTATIONS = [...HEADER_MUTATIONS.map(onHeader), ...IMAGE_MUTATIONS];

const PAIR_BASES: Array<{
  name: string;
  ext: string;
  pair: () => Pair;
  mutations: PairMutation[];
}> = [
  {
    name: 'ni1 pair',
    ext: '',
    pair: () => ({ hdr: pairBytes('ni1_int16.hdr'), img: pairBytes('ni1_int16.img') }),
    mutations: RAW_PAIR_MUTATIONS,
  },
  {
    name: 'analyze pair',
    ext: '',
    pair: () => ({ hdr: pairBytes('analyze_origin.hdr'), img: pairBytes('analyze_origin.img') }),
    mutations: [
      ...RAW_PAIR_MUTATIONS,
      ...ANALYZE_MUTATIONS.map(onHeader),
      ...ANALYZE_MUTATIONS.map(onHeader),
    ],
  },
  {
    name: 'big-endian analyze pair',
    ext: '',
    pair: () => ({
      hdr: pairBytes('analyze_be_center.hdr'),
      img: pairBytes('analyze_be_center.img'),
    }),
    mutations: RAW_PAIR_MUTATIONS,
  },
  {
    name: 'gzip ni1 pair',
    ext: '.gz',
    pair: () => ({ hdr: pairBytes('ni1_gz.hdr.gz'), img: pairBytes('ni1_gz.img.gz') }),
    mutations: gzipPair(RAW_PAIR_MUTATIONS),
  },
];

const PAIR_CASES = 90;
const MAX_VOXELS = 4096;
const tmp = tempDir();
afterAll(() => tmp.cleanup());

describe('readNifti fuzz: .hdr/.img pairs (seeded)', () => {
  it.each(PAIR_BASES)(
    '$name: every mutation reads or throws RegkitIOError within 10 s, within the budget',
    async (base) => {
      const before = tf.memory().numTensors;
      const r = mulberry32(SEED + 7 * base.name.length);
      const original = base.pair();
      const outcomes: Record<string, number> = {};
      const dir = join(tmp.dir, base.name.replace(/\W+/g, '_'));
      for (let n = 0; n < PAIR_CASES; n++) {
        let p: Pair = original;
        const applied: string[] = [];
        const rounds = r() < 0.25 ? 2 : 1;
        for (let k = 0; k < rounds; k++) {
          const m = pick(r, base.mutations);
          applied.push(m.name);
          p = m.apply(p, r);
        }
        // half the cases by path (either file named), half by bytes + imageBytes
        const byPath = r() < 0.5;
        const named = r() < 0.5 ? 'hdr' : 'img';
        let name: string;
        let read: () => Promise<{ data: tf.Tensor }>;
        if (byPath) {
          rmSync(dir, { recursive: true, force: true });
          mkdirSync(dir, { recursive: true });
          const hdrPath = join(dir, `c${n}.hdr${base.ext}`);
          const imgPath = join(dir, `c${n}.img${base.ext}`);
          if (!(p.dropPartner && named === 'img')) writeFileSync(hdrPath, p.hdr);
          if (!(p.dropPartner && named === 'hdr')) writeFileSync(imgPath, p.img);
          name = named === 'hdr' ? hdrPath : imgPath;
          read = () => readNifti(name, { maxVoxels: MAX_VOXELS });
        } else {
          name = `fuzz-${base.name}-${n}.hdr`;
          read = () =>
            readNifti(p.hdr, {
              name,
              imageName: name.replace(/hdr$/, 'img'),
              imageBytes: p.dropPartner ? new Uint8Array(0) : p.img,
              maxVoxels: MAX_VOXELS,
            });
        }
        const t0 = performance.now();
        const buffers0 = process.memoryUsage().arrayBuffers;
        let outcome: string;
        try {
          const vol = await read();
          expect(vol.data.size, `case ${n}: within maxVoxels`).toBeLessThanOrEqual(MAX_VOXELS);
          vol.data.dispose();
          outcome = 'ok';
        } catch (e) {
          if (!(e instanceof RegkitIOError)) {
            throw new Error(
              `case ${n} (${applied.join(' + ')}): ${String(e)}\n${(e as Error).stack}`,
            );
          }
          // the message names the file it is about: the one read, or its partner
          const stem = name.replace(/\.(hdr|img)(\.gz)?$/, '');
          expect(e.message.startsWith(e.file) && e.file.startsWith(stem), e.message).toBe(true);
          outcome = e.code;
        }
        const ms = performance.now() - t0;
        expect(ms, `case ${n} (${applied.join(' + ')}) took ${ms.toFixed(0)} ms`).toBeLessThan(
          10_000,
        );
        // bounded allocation: what one read leaves allocated (garbage included; a GC only
        // lowers it) stays far below what a hostile header could ask for
        const grown = process.memoryUsage().arrayBuffers - buffers0;
        expect(grown, `case ${n} (${applied.join(' + ')}) allocated ${grown} bytes`).toBeLessThan(
          16 * 1024 * 1024,
        );
        outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
      }
      console.log(`${base.name}: ${JSON.stringify(outcomes)}`);
      // the pair is really read (not refused wholesale): mild mutations leave readable pairs
      expect(outcomes.ok ?? 0).toBeGreaterThanOrEqual(20);
      expect(tf.memory().numTensors).toBe(before);
    },
  );

  it('a pair header claiming 4096³ voxels is refused before the image is read; an .img.gz bomb inflates only what is needed', async () => {
    const hdr = pairBytes('ni1_int16.hdr');
    const big = hdr.slice();
    const dv = new DataView(big.buffer);
    for (const at of [42, 44, 46]) dv.setInt16(at, 4096, true);
    const e = await readNifti(big, { name: 'big.hdr', imageBytes: new Uint8Array(10) }).catch(
      (x) => x,
    );
    expect(e).toBeInstanceOf(RegkitIOError);
    expect(e.code).toBe('BUDGET');
    expect(e.file).toBe('big.hdr');
    const img = pairBytes('ni1_int16.img');
    const bomb = new Uint8Array(img.length + 64 * 1024 * 1024);
    bomb.set(img);
    const packed = gzipSync(bomb, { level: 9, mtime: GZ_DATE });
    expect(packed.length).toBeLessThan(200_000);
    const vol = await readNifti(hdr, { name: 'bomb.hdr', imageBytes: packed });
    expect(vol.data.shape).toEqual([1, 4, 3, 2, 1]);
    vol.data.dispose();
  });
});
