/**
 * Fuzzing readVolume on MetaImage, NRRD and MGH: seeded mutations of small valid files
 * (the ITK-, nibabel- and numpy-written fixtures): header lines changed (numbers replaced
 * by weird values, keys dropped or duplicated, garbage lines), binary header fields of MGH
 * set to weird values, bytes flipped, truncation, garbage appended, compressed streams
 * corrupted or truncated, `.mhd`/`.nhdr` data files truncated or missing. Every call must
 * either succeed or throw a RegkitIOError whose message starts with the file it is about,
 * within 10 s, successful reads hold at most `maxVoxels` values, and the ArrayBuffer memory
 * one read leaves behind stays bounded.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initBackend, mulberry32, tf } from '@regkit/core';
import { RegkitIOError, readVolume } from '@regkit/io';
import { gunzipSync, gzipSync, unzlibSync, zlibSync } from 'fflate';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from './helpers.js';

beforeAll(async () => {
  expect(await initBackend('cpu')).toBe('cpu');
});

const SEED = 20261207;
const CASES = 100;
const MAX_VOXELS = 4096;
const tmp = tempDir();
afterAll(() => tmp.cleanup());

const fbytes = (f: string) =>
  new Uint8Array(readFileSync(fileURLToPath(new URL(`./fixtures/formats/${f}`, import.meta.url))));

const int = (r: () => number, lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));
const pick = <T>(r: () => number, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
const WEIRD = [
  '0',
  '-1',
  '1',
  '2',
  '3',
  '4',
  '7',
  '65536',
  '4096',
  '2147483647',
  '-2147483648',
  '1e308',
  'nan',
  'NaN',
  'inf',
  '-inf',
  '',
  'x',
  '0.5',
  '-0',
  '99999999999999999999',
];

type Files = { main: Uint8Array; data?: Uint8Array; dropData?: boolean };
type Mutation = { name: string; apply: (f: Files, r: () => number) => Files };

const enc = new TextEncoder();
const dec = new TextDecoder('latin1');

/** Splits a text header from its data: at the line `end` matches (its end), or the first blank line. */
function splitText(b: Uint8Array, endLine: RegExp | null): { lines: string[]; rest: Uint8Array } {
  const text = dec.decode(b.subarray(0, Math.min(b.length, 8192)));
  const lines: string[] = [];
  let pos = 0;
  while (pos < text.length) {
    const nl = text.indexOf('\n', pos);
    if (nl < 0) break;
    const line = text.slice(pos, nl);
    pos = nl + 1;
    lines.push(line);
    if (endLine ? endLine.test(line) : line === '') break;
  }
  return { lines, rest: b.subarray(pos) };
}

function joinText(lines: string[], rest: Uint8Array): Uint8Array {
  const h = enc.encode(`${lines.join('\n')}\n`);
  const out = new Uint8Array(h.length + rest.length);
  out.set(h);
  out.set(rest, h.length);
  return out;
}

/** Mutations of text headers (MetaImage `key = value`, NRRD `field: value`). */
function textMutations(endLine: RegExp | null, sep: string): Mutation[] {
  const onLines = (name: string, fn: (lines: string[], r: () => number) => void): Mutation => ({
    name,
    apply: (f, r) => {
      const { lines, rest } = splitText(f.main, endLine);
      if (lines.length < 2) return f;
      const body = endLine ? lines.slice(0, -1) : lines.slice(1, -1);
      fn(body, r);
      const rebuilt = endLine ? [...body, lines[lines.length - 1]!] : [lines[0]!, ...body, ''];
      return { ...f, main: joinText(rebuilt, rest) };
    },
  });
  return [
    onLines('replace a number', (lines, r) => {
      const i = int(r, 0, lines.length - 1);
      const parts = lines[i]!.split(sep);
      if (parts.length < 2) return;
      const vals = parts[1]!.trim().split(/(\s+|,)/);
      const nums = vals.map((v, k) => (/\d/.test(v) ? k : -1)).filter((k) => k >= 0);
      if (nums.length === 0) return;
      vals[pick(r, nums)] = pick(r, WEIRD);
      lines[i] = `${parts[0]}${sep}${vals.join('')}`;
    }),
    onLines('drop a line', (lines, r) => {
      lines.splice(int(r, 0, lines.length - 1), 1);
    }),
    onLines('duplicate a line with a weird value', (lines, r) => {
      const i = int(r, 0, lines.length - 1);
      const key = lines[i]!.split(sep)[0]!;
      lines.splice(int(r, 0, lines.length), 0, `${key}${sep}${pick(r, WEIRD)} ${pick(r, WEIRD)}`);
    }),
    onLines('garbage line', (lines, r) => {
      const g = Array.from({ length: int(r, 1, 40) }, () =>
        String.fromCharCode(int(r, 1, 255)),
      ).join('');
      lines.splice(int(r, 0, lines.length), 0, g.replace(/\n/g, ' '));
    }),
    onLines('change the type', (lines, r) => {
      const i = lines.findIndex((l) => /^(ElementType|type)\b/i.test(l));
      if (i < 0) return;
      const types = [
        'MET_UCHAR',
        'MET_DOUBLE',
        'MET_STRING',
        'MET_FLOAT_ARRAY',
        'double',
        'block',
        'int64',
        'uchar',
        'bogus',
      ];
      lines[i] = `${lines[i]!.split(sep)[0]}${sep}${pick(r, types)}`;
    }),
    onLines('change dims', (lines, r) => {
      const i = lines.findIndex((l) => /^(DimSize|sizes|NDims|dimension)\b/i.test(l));
      if (i < 0) return;
      const n = int(r, 1, 4);
      const v = Array.from({ length: n }, () =>
        r() < 0.3 ? pick(r, WEIRD) : String(int(r, 0, 70)),
      ).join(' ');
      lines[i] = `${lines[i]!.split(sep)[0]}${sep}${v}`;
    }),
  ];
}

const BINARY_MUTATIONS: Mutation[] = [
  {
    name: 'truncate',
    apply: (f, r) => ({ ...f, main: f.main.slice(0, int(r, 0, f.main.length - 1)) }),
  },
  {
    name: 'append garbage',
    apply: (f, r) => {
      const out = new Uint8Array(f.main.length + int(r, 1, 3000));
      out.set(f.main);
      for (let i = f.main.length; i < out.length; i++) out[i] = int(r, 0, 255);
      return { ...f, main: out };
    },
  },
  {
    name: 'flip bytes',
    apply: (f, r) => {
      const out = f.main.slice();
      for (let i = 0; i < int(r, 1, 20); i++) out[int(r, 0, out.length - 1)] = int(r, 0, 255);
      return { ...f, main: out };
    },
  },
  {
    name: 'flip header bytes',
    apply: (f, r) => {
      const out = f.main.slice();
      for (let i = 0; i < int(r, 1, 8); i++)
        out[int(r, 0, Math.min(out.length, 400) - 1)] = int(r, 0, 255);
      return { ...f, main: out };
    },
  },
];

const DATA_MUTATIONS: Mutation[] = [
  { name: 'data: missing', apply: (f) => ({ ...f, dropData: true }) },
  {
    name: 'data: truncate',
    apply: (f, r) => ({ ...f, data: f.data!.slice(0, int(r, 0, f.data!.length)) }),
  },
  {
    name: 'data: flip bytes',
    apply: (f, r) => {
      const d = f.data!.slice();
      for (let i = 0; i < int(r, 1, 10) && d.length > 0; i++)
        d[int(r, 0, d.length - 1)] = int(r, 0, 255);
      return { ...f, data: d };
    },
  },
];

/** A mutation of the compressed block after a text header (zlib or gzip) applied to the raw data. */
function onInflated(kind: 'gzip' | 'zlib', endLine: RegExp | null): Mutation[] {
  const inflate = kind === 'gzip' ? gunzipSync : unzlibSync;
  const deflate = (b: Uint8Array) => (kind === 'gzip' ? gzipSync(b, { mtime: 0 }) : zlibSync(b));
  return [
    {
      name: `${kind}: raw data truncated or grown`,
      apply: (f, r) => {
        const { lines, rest } = splitText(f.main, endLine);
        let raw: Uint8Array;
        try {
          raw = inflate(rest);
        } catch {
          return f;
        }
        const n = r() < 0.5 ? int(r, 0, raw.length) : raw.length + int(r, 1, 1_000_000);
        const next = new Uint8Array(n);
        next.set(raw.subarray(0, Math.min(n, raw.length)));
        return { ...f, main: joinText(lines, deflate(next)) };
      },
    },
    {
      name: `${kind}: stream corrupted`,
      apply: (f, r) => {
        const { lines, rest } = splitText(f.main, endLine);
        const out = rest.slice();
        for (let i = 0; i < int(r, 1, 6) && out.length > 0; i++) {
          const at = int(r, 0, out.length - 1);
          out[at] = out[at]! ^ (1 << int(r, 0, 7));
        }
        return { ...f, main: joinText(lines, out) };
      },
    },
    {
      name: `${kind}: stream truncated`,
      apply: (f, r) => {
        const { lines, rest } = splitText(f.main, endLine);
        return { ...f, main: joinText(lines, rest.slice(0, int(r, 0, rest.length))) };
      },
    },
  ];
}

const MGH_FIELDS: Mutation = {
  name: 'MGH header field',
  apply: (f, r) => {
    const gz = f.main[0] === 0x1f && f.main[1] === 0x8b;
    let b: Uint8Array;
    try {
      b = gz ? gunzipSync(f.main) : f.main.slice();
    } catch {
      return f;
    }
    if (b.length < 90) return f;
    const dv = new DataView(b.buffer, b.byteOffset, b.length);
    const at = pick(r, [0, 4, 8, 12, 16, 20, 24, 28, 30, 34, 42, 58, 78]);
    const v = pick(r, [0, 1, -1, 2, 3, 4, 5, 10, 255, 4096, 65536, 2 ** 31 - 1, -(2 ** 31)]);
    if (at === 28) dv.setInt16(at, (v << 16) >> 16, false);
    else if (at >= 30)
      dv.setFloat32(
        at,
        pick(r, [0, -0, 1e38, Number.NaN, Number.POSITIVE_INFINITY, -1, 1e-30]),
        false,
      );
    else dv.setInt32(at, v | 0, false);
    return { ...f, main: gz ? gzipSync(b, { mtime: 0 }) : b };
  },
};

const META_END = /^ElementDataFile\s*=/i;

const BASES: Array<{
  name: string;
  ext: string;
  dataExt?: string;
  files: () => Files;
  mutations: Mutation[];
}> = [
  {
    name: 'itk_short_z.mha (zlib)',
    ext: '.mha',
    files: () => ({ main: fbytes('itk_short_z.mha') }),
    mutations: [
      ...textMutations(META_END, ' = '),
      ...BINARY_MUTATIONS,
      ...onInflated('zlib', META_END),
    ],
  },
  {
    name: 'np_vec_be_long.mha',
    ext: '.mha',
    files: () => ({ main: fbytes('np_vec_be_long.mha') }),
    mutations: [
      ...textMutations(META_END, ' = '),
      ...BINARY_MUTATIONS,
      ...onInflated('zlib', META_END),
    ],
  },
  {
    name: 'itk_uchar.mhd + raw',
    ext: '.mhd',
    dataExt: '.raw',
    files: () => ({ main: fbytes('itk_uchar.mhd'), data: fbytes('itk_uchar.raw') }),
    mutations: [...textMutations(META_END, ' = '), ...DATA_MUTATIONS],
  },
  {
    name: 'itk_ushort.nrrd',
    ext: '.nrrd',
    files: () => ({ main: fbytes('itk_ushort.nrrd') }),
    mutations: [...textMutations(null, ': '), ...BINARY_MUTATIONS],
  },
  {
    name: 'np_ras_list_be.nrrd (gzip)',
    ext: '.nrrd',
    files: () => ({ main: fbytes('np_ras_list_be.nrrd') }),
    mutations: [...textMutations(null, ': '), ...BINARY_MUTATIONS, ...onInflated('gzip', null)],
  },
  {
    name: 'nib_int16.mgh',
    ext: '.mgh',
    files: () => ({ main: fbytes('nib_int16.mgh') }),
    mutations: [MGH_FIELDS, MGH_FIELDS, ...BINARY_MUTATIONS],
  },
  {
    name: 'nib_frames.mgz',
    ext: '.mgz',
    files: () => ({ main: fbytes('nib_frames.mgz') }),
    mutations: [MGH_FIELDS, MGH_FIELDS, MGH_FIELDS, ...BINARY_MUTATIONS],
  },
];

describe('readVolume fuzz: MetaImage, NRRD, MGH (seeded)', () => {
  it.each(BASES)(
    '$name: every mutation reads or throws RegkitIOError within 10 s, within the budget',
    async (base) => {
      const before = tf.memory().numTensors;
      const r = mulberry32(SEED + 13 * base.name.length);
      const original = base.files();
      const outcomes: Record<string, number> = {};
      const dir = join(tmp.dir, base.name.replace(/\W+/g, '_'));
      for (let n = 0; n < CASES; n++) {
        let f = original;
        const applied: string[] = [];
        const rounds = r() < 0.25 ? 2 : 1;
        for (let k = 0; k < rounds; k++) {
          const m = pick(r, base.mutations);
          applied.push(m.name);
          f = m.apply(f, r);
        }
        // .mhd: by path (the data file beside it); others half by path, half by bytes
        const byPath = base.dataExt !== undefined || r() < 0.5;
        let name: string;
        let read: () => Promise<{ data: tf.Tensor }>;
        if (byPath) {
          rmSync(dir, { recursive: true, force: true });
          mkdirSync(dir, { recursive: true });
          name = join(dir, `c${n}${base.ext}`);
          writeFileSync(name, f.main);
          if (base.dataExt && f.data && !f.dropData) {
            // the header names the fixture's data file
            const { lines } = splitText(f.main, META_END);
            const m = /ElementDataFile\s*=\s*(\S+)/.exec(lines[lines.length - 1] ?? '');
            if (m && !/[\\/]/.test(m[1]!) && m[1] !== 'LOCAL')
              writeFileSync(join(dir, m[1]!), f.data);
          }
          read = () => readVolume(name, { maxVoxels: MAX_VOXELS });
        } else {
          name = `fuzz-${n}${base.ext}`;
          read = () => readVolume(f.main, { name, maxVoxels: MAX_VOXELS });
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
          // the message names the file it is about: the one read, or its data file
          const ok =
            e.message.startsWith(`${e.file}: `) && (e.file === name || e.file.startsWith(dir));
          expect(ok, `case ${n} (${applied.join(' + ')}): ${e.message}`).toBe(true);
          outcome = e.code;
        }
        const ms = performance.now() - t0;
        expect(ms, `case ${n} (${applied.join(' + ')}) took ${ms.toFixed(0)} ms`).toBeLessThan(
          10_000,
        );
        const grown = process.memoryUsage().arrayBuffers - buffers0;
        expect(grown, `case ${n} (${applied.join(' + ')}) allocated ${grown} bytes`).toBeLessThan(
          16 * 1024 * 1024,
        );
        outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
      }
      console.log(`${base.name}: ${JSON.stringify(outcomes)}`);
      // mild mutations leave readable files: the reader is exercised, not refusing wholesale
      expect(outcomes.ok ?? 0).toBeGreaterThanOrEqual(10);
      expect(Object.keys(outcomes).length).toBeGreaterThanOrEqual(3);
      expect(tf.memory().numTensors).toBe(before);
    },
  );

  it('compression bombs: a header claiming 4096³ is refused from the header; 32 MB of zeros after the voxels inflate only as far as the shape needs', async () => {
    const mgh = fbytes('nib_int16.mgh');
    const big = mgh.slice();
    const dv = new DataView(big.buffer);
    for (const at of [4, 8, 12]) dv.setInt32(at, 4096, false);
    const e = await readVolume(gzipSync(big.subarray(0, 1000), { mtime: 0 }), {
      name: 'b.mgz',
    }).catch((x) => x);
    expect(e).toBeInstanceOf(RegkitIOError);
    expect(e.code).toBe('BUDGET');
    // 32 MB of zeros after the voxels of a small .mgz
    const bomb = new Uint8Array(mgh.length + 32 * 1024 * 1024);
    bomb.set(mgh);
    const packed = gzipSync(bomb, { level: 9, mtime: 0 });
    expect(packed.length).toBeLessThan(200_000);
    const buffers0 = process.memoryUsage().arrayBuffers;
    const v = await readVolume(packed, { name: 'bomb.mgz' });
    expect(v.data.shape).toEqual([1, 4, 5, 3, 1]);
    v.data.dispose();
    expect(process.memoryUsage().arrayBuffers - buffers0).toBeLessThan(16 * 1024 * 1024);
    // the same for a zlib MetaImage block
    const { lines } = splitText(fbytes('itk_short_z.mha'), META_END);
    const raw = unzlibSync(splitText(fbytes('itk_short_z.mha'), META_END).rest);
    const zeros = new Uint8Array(raw.length + 32 * 1024 * 1024);
    zeros.set(raw);
    const mha = joinText(
      lines.filter((l) => !/^CompressedDataSize/.test(l)),
      zlibSync(zeros, { level: 9 }),
    );
    const m = await readVolume(mha, { name: 'bomb.mha' });
    expect(m.data.shape).toEqual([1, 6, 5, 4, 1]);
    m.data.dispose();
  });
});
