/**
 * MetaImage / NRRD / MGH: readVolume against files written by independent tools
 * (test/fixtures/make_format_fixtures.py: ITK inside elastix's transformix, nibabel, and a
 * numpy writer following the format specifications), live cross-checks of regkit's writers
 * (transformix reads our .mha/.mhd/.nrrd; nibabel reads our .mgh/.mgz — skipped with the
 * reason when the tool is missing), round trips and typed errors.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initBackend, mulberry32, tf } from '@regkit/core';
import {
  encodeDisplacementField,
  encodeVolume,
  imageFormat,
  RegkitIOError,
  readDisplacementField,
  readNifti,
  readVolume,
  type Volume,
  writeDisplacementField,
  writeVolume,
} from '@regkit/io';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectClose, hasNibabel, makeAffine, python, tempDir } from './helpers.js';

interface FormatFixture {
  file: string;
  source: string;
  datatype: string;
  shape: number[];
  affine: number[];
  data?: number[];
  constant?: number[];
}

const FIXTURES = JSON.parse(
  readFileSync(new URL('./fixtures/format_fixtures.json', import.meta.url), 'utf8'),
) as { files: FormatFixture[] };
const fpath = (f: string) => fileURLToPath(new URL(`./fixtures/formats/${f}`, import.meta.url));
const fbytes = (f: string) => new Uint8Array(readFileSync(fpath(f)));

const tmp = tempDir();
beforeAll(async () => {
  expect(await initBackend('cpu')).toBe('cpu');
});
afterAll(() => tmp.cleanup());

async function values(v: Volume): Promise<Float32Array> {
  return (await v.data.data()) as Float32Array;
}

/** An oblique 3D affine (rotation with a flip of axes, anisotropic spacing). */
const OBLIQUE = makeAffine(
  [
    [0, -1.5 * Math.cos(0.3), 0.9 * Math.sin(0.3)],
    [0, 1.5 * Math.sin(0.3), 0.9 * Math.cos(0.3)],
    [-1.2, 0, 0],
  ],
  [12.5, -7.25, 30],
);
const AFFINE_2D = makeAffine(
  [
    [-0.8, 0.3, 0],
    [0.3, 0.8, 0],
    [0, 0, 1],
  ],
  [4, -2, 0],
);

function randomVolume(shape: number[], affine: number[], seed: number, scale = 100): Volume {
  const r = mulberry32(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  const vals = Float32Array.from({ length: n }, () => Math.round((r() - 0.5) * 2 * scale * 4) / 4);
  return {
    data: tf.tensor(vals, shape, 'float32'),
    affine,
    spacing: [],
    header: undefined as unknown as Volume['header'],
  };
}

describe('readVolume: files written by ITK, nibabel and a spec-following numpy writer', () => {
  it.each(FIXTURES.files)('$file ($source)', async (fx) => {
    const v = await readVolume(fpath(fx.file));
    try {
      expect(v.data.shape).toEqual(fx.shape);
      expectClose(v.affine, fx.affine, 1e-6, 1e-5, `${fx.file} affine`);
      expect(v.header.datatype).toBe(fx.datatype);
      expect(v.header.fileFormat).toBe(imageFormat(fx.file));
      expect(v.header.affineSource).toBe('header');
      const got = await values(v);
      const want = fx.data
        ? fx.data.map((x) => Math.fround(x))
        : Array.from({ length: got.length }, (_, i) => Math.fround(fx.constant![i % 3]!));
      expectClose(got, want, 0, 0, `${fx.file} data`);
      // the spacing is the affine's column norms
      const nd = fx.shape.length - 2;
      for (let c = 0; c < nd; c++) {
        const norm = Math.hypot(fx.affine[c]!, fx.affine[4 + c]!, fx.affine[8 + c]!);
        expect(v.spacing[c]).toBeCloseTo(norm, 5);
      }
    } finally {
      v.data.dispose();
    }
  });

  it('int32 values beyond 2^24 give a warning naming the datatype and the error', async () => {
    const v = await readVolume(fpath('np_vec_be_long.mha'));
    v.data.dispose();
    expect(v.warnings!.join('\n')).toMatch(
      /np_vec_be_long\.mha: .* int32 values do not survive float32/,
    );
  });

  it('reads bytes too: the format is detected (or given), .mhd/.nhdr with dataBytes', async () => {
    for (const f of ['itk_float.mha', 'itk_int_gz.nrrd', 'nib_frames.mgz', 'nib_float32.mgh']) {
      const fromPath = await readVolume(fpath(f));
      const fromBytes = await readVolume(fbytes(f), { name: f });
      expect(fromBytes.header.fileFormat).toBe(fromPath.header.fileFormat);
      expect(fromBytes.affine).toEqual(fromPath.affine);
      expectClose(await values(fromBytes), await values(fromPath), 0, 0, f);
      tf.dispose([fromPath.data, fromBytes.data]);
    }
    const mhd = await readVolume(fbytes('itk_double_z.mhd'), {
      name: 'itk_double_z.mhd',
      dataBytes: fbytes('itk_double_z.zraw'),
    });
    expect(mhd.data.shape).toEqual([1, 4, 3, 5, 1]);
    mhd.data.dispose();
    const e = await readVolume(fbytes('itk_uchar.mhd'), { name: 'x.mhd' }).catch((x) => x);
    expect(e).toBeInstanceOf(RegkitIOError);
    expect(e.code).toBe('NOTFOUND');
    expect(e.message).toMatch(/^x\.mhd: .*dataBytes/);
    // NIfTI still goes through readNifti
    const nii = join(tmp.dir, 'n.nii.gz');
    const vol = randomVolume([1, 3, 4, 2, 1], OBLIQUE, 1);
    await writeVolume(nii, vol);
    const back = await readVolume(nii);
    expect(back.header.fileFormat).toBe('nifti');
    tf.dispose([vol.data, back.data]);
  });

  it('ITK displacement fields in .mha/.nrrd: readDisplacementField gives voxel units', async () => {
    for (const f of ['itk_field.mha', 'itk_field_gz.nrrd']) {
      const fx = FIXTURES.files.find((x) => x.file === f)!;
      const ref: Volume = {
        data: tf.zeros([1, 4, 3, 5, 1]),
        affine: fx.affine,
        spacing: [],
        header: undefined as unknown as Volume['header'],
      };
      const u = await readDisplacementField(fpath(f), ref);
      // u_vox = A₃⁻¹ · diag(−1, −1, 1) · t_LPS (closed form, solved here with tf)
      const a3 = tf.tensor2d([0, 1, 2].map((r) => fx.affine.slice(r * 4, r * 4 + 3)));
      const t = fx.constant!;
      const rhs = tf.tensor2d([[-t[0]!], [-t[1]!], [t[2]!]]);
      const want = (await tf.matMul(tf.tensor2d(await invert3(a3)), rhs).data()) as Float32Array;
      const got = (await u.data()) as Float32Array;
      for (let i = 0; i < got.length; i++) expect(got[i]).toBeCloseTo(want[i % 3]!, 4);
      tf.dispose([ref.data, u, a3, rhs]);
    }
  });
});

async function invert3(m: tf.Tensor2D): Promise<number[][]> {
  const a = (await m.array()) as number[][];
  const [[a0, a1, a2], [b0, b1, b2], [c0, c1, c2]] = a as [number[], number[], number[]];
  const det =
    a0! * (b1! * c2! - b2! * c1!) - a1! * (b0! * c2! - b2! * c0!) + a2! * (b0! * c1! - b1! * c0!);
  return [
    [(b1! * c2! - b2! * c1!) / det, (a2! * c1! - a1! * c2!) / det, (a1! * b2! - a2! * b1!) / det],
    [(b2! * c0! - b0! * c2!) / det, (a0! * c2! - a2! * c0!) / det, (a2! * b0! - a0! * b2!) / det],
    [(b0! * c1! - b1! * c0!) / det, (a1! * c0! - a0! * c1!) / det, (a0! * b1! - a1! * b0!) / det],
  ];
}

const DATATYPES = [
  'uint8',
  'int8',
  'int16',
  'uint16',
  'int32',
  'uint32',
  'float32',
  'float64',
] as const;
const RANGES: Record<string, [number, number]> = {
  uint8: [0, 255],
  int8: [-128, 127],
  int16: [-32768, 32767],
  uint16: [0, 65535],
  int32: [-2147483648, 2147483647],
  uint32: [0, 4294967295],
};

describe('writeVolume → readVolume round trips', () => {
  const endings = ['.mha', '.mhd', '.nrrd', '.mgh', '.mgz'];
  it.each(endings)(
    '%s: every datatype, compressed and not, 2D and 3D, multi-channel',
    async (ext) => {
      let seed = 10;
      for (const datatype of DATATYPES) {
        for (const compress of [false, true]) {
          for (const [shape, affine] of [
            [[1, 5, 4, 3, 1], OBLIQUE],
            [[1, 6, 5, 2], AFFINE_2D],
            [[1, 3, 4, 2, 3], OBLIQUE],
          ] as Array<[number[], number[]]>) {
            const vol = randomVolume(shape, affine, seed++, 300);
            const path = join(tmp.dir, `rt_${datatype}_${compress}_${seed}${ext}`);
            await writeVolume(path, vol, { datatype, compress });
            const back = await readVolume(path);
            const want = Array.from(await values(vol), (x) => {
              const r = RANGES[datatype];
              return r ? Math.min(r[1], Math.max(r[0], Math.round(x))) : x;
            });
            expect(back.data.shape, `${path}`).toEqual(shape);
            const mgh = ext === '.mgh' || ext === '.mgz';
            // MGH stores the geometry as float32
            expectClose(back.affine, affine, mgh ? 1e-6 : 0, mgh ? 2e-5 : 1e-12, `${path} affine`);
            expectClose(await values(back), want, 0, 0, `${path} data`);
            tf.dispose([vol.data, back.data]);
          }
        }
      }
    },
  );

  it('encodeVolume gives the bytes writeVolume writes (.mha, .nrrd, .mgh; NIfTI by default)', async () => {
    const vol = randomVolume([1, 4, 3, 2, 1], OBLIQUE, 99);
    for (const [format, ext] of [
      ['metaimage', '.mha'],
      ['nrrd', '.nrrd'],
      ['mgh', '.mgh'],
      ['nifti', '.nii'],
    ] as const) {
      const path = join(tmp.dir, `enc${ext}`);
      await writeVolume(path, vol, { datatype: 'int16' });
      const bytes = encodeVolume(vol, { format, datatype: 'int16' });
      expect(Buffer.from(bytes).equals(readFileSync(path)), format).toBe(true);
    }
    const mgz = encodeVolume(vol, { format: 'mgh', compress: true });
    const back = await readVolume(mgz, { name: 'x.mgz' });
    expectClose(await values(back), await values(vol), 0, 0, 'mgz bytes');
    tf.dispose([vol.data, back.data]);
  });

  it('displacement fields: .mha/.nrrd written as ITK vector images read back in voxel units; .mgz refused', async () => {
    const ref = randomVolume([1, 5, 4, 3, 1], OBLIQUE, 5);
    const field = tf.randomUniform([1, 5, 4, 3, 3], -2, 2, 'float32', 3);
    for (const ext of ['.mha', '.nrrd']) {
      const path = join(tmp.dir, `field${ext}`);
      await writeDisplacementField(path, field, ref, { compress: ext === '.nrrd' });
      const back = await readDisplacementField(path, ref);
      expectClose(
        (await back.data()) as Float32Array,
        (await field.data()) as Float32Array,
        1e-5,
        1e-5,
        ext,
      );
      const asImage = await readVolume(path);
      expect(asImage.data.shape).toEqual([1, 5, 4, 3, 3]);
      const bytes = encodeDisplacementField(field, ref, {
        format: ext === '.mha' ? 'metaimage' : 'nrrd',
        gzip: ext === '.nrrd',
      });
      expect(Buffer.from(bytes).equals(readFileSync(path)), ext).toBe(true);
      tf.dispose([back, asImage.data]);
    }
    const e = await writeDisplacementField(join(tmp.dir, 'f.mgz'), field, ref).catch((x) => x);
    expect(e).toBeInstanceOf(RegkitIOError);
    expect(e.code).toBe('PATH');
    tf.dispose([ref.data, field]);
  });
});

describe('typed errors', () => {
  const expectCode = async (p: Promise<unknown>, code: string, re?: RegExp) => {
    const e = await p.then(
      () => null,
      (x: unknown) => x,
    );
    expect(e, `expected ${code}`).toBeInstanceOf(RegkitIOError);
    expect((e as RegkitIOError).code).toBe(code);
    if (re) expect((e as RegkitIOError).message).toMatch(re);
  };
  const mha = (lines: string[], data = new Uint8Array(0)) => {
    const h = new TextEncoder().encode(`${lines.join('\n')}\n`);
    const out = new Uint8Array(h.length + data.length);
    out.set(h);
    out.set(data, h.length);
    return out;
  };
  const base = ['ObjectType = Image', 'NDims = 3', 'DimSize = 2 2 2', 'ElementType = MET_SHORT'];

  it('MetaImage', async () => {
    const r = (b: Uint8Array, o = {}) =>
      readVolume(b, { name: 'x.mha', format: 'metaimage', ...o });
    await expectCode(r(mha(base)), 'MAGIC', /^x\.mha: .*ElementDataFile/);
    await expectCode(
      r(mha([...base, 'ElementDataFile = LOCAL'])),
      'SIZE',
      /^x\.mha: 0 bytes of voxel data.*need 16/,
    );
    await expectCode(
      r(
        mha([
          'NDims = 4',
          'DimSize = 2 2 2 2',
          'ElementType = MET_SHORT',
          'ElementDataFile = LOCAL',
        ]),
      ),
      'DIMS',
    );
    await expectCode(
      r(
        mha(['NDims = 3', 'DimSize = 2 0 2', 'ElementType = MET_SHORT', 'ElementDataFile = LOCAL']),
      ),
      'DIMS',
    );
    await expectCode(
      r(
        mha([
          'NDims = 3',
          'DimSize = 2 2 2',
          'ElementType = MET_STRING',
          'ElementDataFile = LOCAL',
        ]),
      ),
      'DATATYPE',
      /MET_STRING/,
    );
    await expectCode(
      r(mha([...base.slice(0, 2), 'DimSize = 512 512 512', base[3]!, 'ElementDataFile = LOCAL']), {
        maxVoxels: 1000,
      }),
      'BUDGET',
    );
    await expectCode(
      r(
        mha(
          [...base, 'TransformMatrix = 1 0 0 1 0 0 0 0 1', 'ElementDataFile = LOCAL'],
          new Uint8Array(16),
        ),
      ),
      'AFFINE',
      /singular/,
    );
    await expectCode(
      r(
        mha(
          [...base, 'CompressedData = True', 'ElementDataFile = LOCAL'],
          new Uint8Array(40).fill(7),
        ),
      ),
      'GZIP',
      /zlib/,
    );
    await expectCode(r(new TextEncoder().encode('hello world\n')), 'MAGIC');
    await expectCode(readVolume(join(tmp.dir, 'missing.mha')), 'NOTFOUND');
    const hdr = join(tmp.dir, 'lonely.mhd');
    writeFileSync(hdr, mha([...base, 'ElementDataFile = lonely.raw']));
    await expectCode(
      readVolume(hdr),
      'NOTFOUND',
      /lonely\.raw: no such file: the data file of .*lonely\.mhd/,
    );
  });

  it('NRRD', async () => {
    const r = (s: string, o = {}) =>
      readVolume(new TextEncoder().encode(s), { name: 'x.nrrd', format: 'nrrd', ...o });
    const head = 'NRRD0004\ntype: short\ndimension: 3\nsizes: 2 2 2\nendian: little\n';
    await expectCode(r('NRRX0004\n'), 'MAGIC');
    await expectCode(r(`${head}encoding: bzip2\n\n`), 'DATATYPE', /bzip2/);
    await expectCode(r(`${head}encoding: raw\n\n`), 'SIZE', /^x\.nrrd: 0 bytes/);
    await expectCode(r(`${head}encoding: gzip\n\nnot gzip at all`), 'GZIP');
    await expectCode(
      r('NRRD0004\ntype: block\ndimension: 3\nsizes: 2 2 2\nencoding: raw\n\n'),
      'DATATYPE',
    );
    await expectCode(
      r('NRRD0004\ntype: short\ndimension: 3\nsizes: 2 -2 2\nencoding: raw\n\n'),
      'DIMS',
    );
    await expectCode(
      r('NRRD0004\ntype: short\ndimension: 3\nsizes: 900 900 900\nencoding: raw\n\n', {
        maxVoxels: 1e6,
      }),
      'BUDGET',
    );
    await expectCode(r(`${head}space: martian\nencoding: raw\n\n`), 'AFFINE', /martian/);
    await expectCode(r(`${head}encoding: raw`), 'SIZE', /blank line/);
    await expectCode(r(`${head}encoding: ascii\n\n1 2 3`), 'SIZE', /3 values, 8 needed/);
  });

  it('MGH', async () => {
    const good = fbytes('nib_int16.mgh');
    const r = (b: Uint8Array, o = {}) => readVolume(b, { name: 'x.mgh', format: 'mgh', ...o });
    const bad = (at: number, v: number) => {
      const b = good.slice();
      new DataView(b.buffer).setInt32(at, v, false);
      return b;
    };
    await expectCode(r(bad(0, 2)), 'MAGIC', /version 2/);
    await expectCode(r(bad(20, 2)), 'DATATYPE', /MGH type 2/);
    await expectCode(r(bad(8, 0)), 'DIMS');
    await expectCode(r(bad(4, 100000), { maxVoxels: 1e6 }), 'BUDGET');
    await expectCode(r(good.slice(0, 300)), 'SIZE', /^x\.mgh: 16 bytes of voxel data/);
    await expectCode(r(good.slice(0, 50)), 'SIZE');
    const mgz = fbytes('nib_int32.mgz');
    await expectCode(
      readVolume(mgz.slice(0, mgz.length - 40), { name: 'x.mgz' }),
      'GZIP',
      /^x\.mgz: truncated gzip/,
    );
  });

  it('paths and options', async () => {
    await expectCode(readVolume(join(tmp.dir, 'x.tiff')), 'PATH', /\.mgz/);
    const vol = randomVolume([1, 2, 2, 2, 1], OBLIQUE, 3);
    await expectCode(writeVolume(join(tmp.dir, 'x.nhdr'), vol), 'PATH');
    await expectCode(writeVolume(join(tmp.dir, 'x.png'), vol), 'PATH');
    await expectCode(
      writeVolume(join(tmp.dir, 'x.mha'), vol, { datatype: 'int64' as 'int32' }),
      'DATATYPE',
    );
    await expectCode(writeVolume(join(tmp.dir, 'x.mgz'), vol, { compressionLevel: 12 }), 'OPTION');
    const first = join(tmp.dir, 'exists.mhd');
    await writeVolume(first, vol);
    await expectCode(writeVolume(first, vol, { overwrite: false }), 'EXISTS');
    expect(readdirSync(tmp.dir).some((f) => f.endsWith('.tmp'))).toBe(false);
    await expectCode(readVolume(new Uint8Array(4), { format: 'tiff' as 'nrrd' }), 'OPTION');
    const oblique2d = {
      ...vol,
      data: tf.zeros([1, 3, 3, 1]),
      affine: makeAffine(
        [
          [1, 0, 0],
          [0, 1, 0],
          [0.5, 0, 1],
        ],
        [0, 0, 0],
      ),
    };
    await expectCode(writeVolume(join(tmp.dir, 'o.mha'), oblique2d), 'AFFINE', /x–y plane/);
    tf.dispose([vol.data, oblique2d.data]);
  });
});

// ---------------------------------------------------------------------------------------
// live cross-checks with the independent tools

function transformixReason(): string | null {
  try {
    execFileSync('transformix', ['--help'], { stdio: 'ignore' });
    return null;
  } catch {
    return 'transformix (elastix) not installed: apt-get install elastix';
  }
}

/** An identity transformix parameter file on `vol`'s grid (LPS, Direction column-major). */
function identityParams(vol: Volume, ext: string): string {
  const nd = vol.data.rank - 2;
  const a = vol.affine;
  const flip = [-1, -1, 1];
  const lps = (r: number, c: number) => flip[r]! * a[r * 4 + c]!;
  const sp = Array.from({ length: nd }, (_, c) =>
    Math.hypot(...Array.from({ length: nd }, (_, r) => lps(r, c))),
  );
  const dir: number[] = [];
  for (let c = 0; c < nd; c++) for (let r = 0; r < nd; r++) dir.push(lps(r, c) / sp[c]!);
  const o = Array.from({ length: nd }, (_, r) => lps(r, 3));
  return [
    '(Transform "TranslationTransform")',
    `(NumberOfParameters ${nd})`,
    `(TransformParameters ${Array(nd).fill(0).join(' ')})`,
    '(InitialTransformParametersFileName "NoInitialTransform")',
    '(HowToCombineTransforms "Compose")',
    `(FixedImageDimension ${nd})`,
    `(MovingImageDimension ${nd})`,
    '(FixedInternalImagePixelType "float")',
    '(MovingInternalImagePixelType "float")',
    `(Size ${vol.data.shape.slice(1, -1).join(' ')})`,
    `(Index ${Array(nd).fill(0).join(' ')})`,
    `(Spacing ${sp.join(' ')})`,
    `(Origin ${o.join(' ')})`,
    `(Direction ${dir.join(' ')})`,
    '(UseDirectionCosines "true")',
    '(ResampleInterpolator "FinalBSplineInterpolator")',
    '(FinalBSplineInterpolationOrder 0)',
    '(Resampler "DefaultResampler")',
    '(DefaultPixelValue -7777)',
    `(ResultImageFormat "${ext}")`,
    '(ResultImagePixelType "float")',
    '(CompressResultImage "false")',
    '',
  ].join('\n');
}

describe('ITK (transformix) reads what writeVolume writes', () => {
  const reason = transformixReason();
  if (reason) console.error(`skipped: ${reason}`);
  it.skipIf(reason !== null)(
    `.mha, .mhd, .nrrd (raw and compressed, 2D and 3D) resample unchanged onto their own grid${reason ? ` (skipped: ${reason})` : ''}`,
    async () => {
      let seed = 200;
      for (const ext of ['.mha', '.mhd', '.nrrd']) {
        for (const compress of [false, true]) {
          for (const [shape, affine] of [
            [[1, 5, 4, 3, 1], OBLIQUE],
            [[1, 6, 5, 1], AFFINE_2D],
          ] as Array<[number[], number[]]>) {
            const vol = randomVolume(shape, affine, seed++);
            const dir = join(tmp.dir, `tx${seed}`);
            execFileSync('mkdir', ['-p', dir]);
            const input = join(dir, `in${ext}`);
            await writeVolume(input, vol, { compress, datatype: 'int16' });
            // ITK reads our file and resamples it on the grid we claim; its NIfTI writer
            // then states that grid as ITK understood it
            writeFileSync(join(dir, 'tp.txt'), identityParams(vol, 'nii'));
            execFileSync('transformix', ['-in', input, '-out', dir, '-tp', join(dir, 'tp.txt')], {
              stdio: 'ignore',
            });
            const out = await readNifti(join(dir, 'result.nii'));
            expect(out.data.shape).toEqual(shape);
            expectClose(out.affine, affine, 1e-5, 1e-4, `${input} affine (ITK)`);
            const want = Array.from(await values(vol), Math.round);
            expectClose(await values(out), want, 0, 0, `${input} data (ITK)`);
            tf.dispose([vol.data, out.data]);
          }
        }
      }
    },
  );
});

describe('ITK (transformix) applies the fields writeDisplacementField writes as .mha/.nrrd', () => {
  const reason = transformixReason();
  it.skipIf(reason !== null)(
    `a DeformationFieldTransform of our file gives the same field back (transformix -def all)${reason ? ` (skipped: ${reason})` : ''}`,
    async () => {
      const ref = randomVolume([1, 5, 4, 3, 1], OBLIQUE, 7);
      const u = tf.randomUniform([1, 5, 4, 3, 3], -2, 2, 'float32', 4);
      for (const ext of ['.mha', '.nrrd']) {
        const dir = join(tmp.dir, `def${ext.slice(1)}`);
        execFileSync('mkdir', ['-p', dir]);
        const fieldPath = join(dir, `field${ext}`);
        await writeDisplacementField(fieldPath, u, ref, { compress: ext === '.nrrd' });
        // ITK reads the vector image as a displacement field transform and samples it
        // (order 0) on the same grid, then writes it as ITK's own 5D NIfTI field
        const params = identityParams(ref, 'nii')
          .replace(
            '(Transform "TranslationTransform")',
            `(Transform "DeformationFieldTransform")\n(DeformationFieldFileName "${fieldPath}")\n(DeformationFieldInterpolationOrder 0)`,
          )
          .replace(
            /\(NumberOfParameters \d+\)\n\(TransformParameters [^)]*\)/,
            '(NumberOfParameters 0)',
          );
        writeFileSync(join(dir, 'tp.txt'), params);
        execFileSync('transformix', ['-def', 'all', '-out', dir, '-tp', join(dir, 'tp.txt')], {
          stdio: 'ignore',
        });
        const back = await readDisplacementField(join(dir, 'deformationField.nii'), ref);
        expectClose(
          (await back.data()) as Float32Array,
          (await u.data()) as Float32Array,
          1e-5,
          1e-5,
          `${ext} field through ITK`,
        );
        back.dispose();
      }
      tf.dispose([ref.data, u]);
    },
  );
});

describe('nibabel reads what writeVolume writes (.mgh, .mgz)', () => {
  const ok = hasNibabel();
  if (!ok)
    console.error(
      'skipped: nibabel not importable by /usr/bin/python3 (apt-get install python3-nibabel)',
    );
  it.skipIf(!ok)(
    `affine and data agree${ok ? '' : ' (skipped: nibabel missing; apt-get install python3-nibabel)'}`,
    async () => {
      let seed = 300;
      const cases: Array<{ path: string; want: number[]; shape: number[]; affine: number[] }> = [];
      for (const datatype of ['uint8', 'int16', 'int32', 'float32', 'uint16', 'float64'] as const) {
        for (const [shape, affine, ext] of [
          [[1, 5, 4, 3, 1], OBLIQUE, '.mgz'],
          [[1, 4, 3, 2, 3], OBLIQUE, '.mgh'],
        ] as Array<[number[], number[], string]>) {
          const vol = randomVolume(shape, affine, seed++, 120);
          const path = join(tmp.dir, `nib_${datatype}_${seed}${ext}`);
          await writeVolume(path, vol, { datatype });
          const r = RANGES[datatype];
          const want = Array.from(await values(vol), (x) =>
            r ? Math.min(r[1], Math.max(r[0], Math.round(x))) : x,
          );
          cases.push({ path, want, shape, affine });
          tf.dispose(vol.data);
        }
      }
      // one python process reads them all
      const got = python<Array<{ affine: number[]; shape: number[]; data: number[] }>>(
        'import sys, json, nibabel as nib, numpy as np\n' +
          'out = []\n' +
          'for p in sys.argv[1:]:\n' +
          '    img = nib.load(p)\n' +
          '    d = np.asarray(img.get_fdata())\n' +
          '    out.append({"affine": img.affine.ravel().tolist(), "shape": [int(s) for s in img.shape], "data": d.reshape(d.shape[:3] + (-1,)).ravel().tolist()})\n' +
          'print(json.dumps(out))',
        cases.map((c) => c.path),
      );
      for (const [i, c] of cases.entries()) {
        const g = got[i]!;
        expect(g.shape.slice(0, 3)).toEqual(
          c.shape.slice(1, 4).map((x, k) => (k < c.shape.length - 2 ? x : 1)),
        );
        expectClose(g.affine, c.affine, 1e-6, 2e-5, `${c.path} affine (nibabel)`);
        expectClose(g.data, c.want, 0, 0, `${c.path} data (nibabel)`);
      }
    },
  );
});

describe('nibabel corpus: test.mgz', () => {
  const ok = hasNibabel();
  it.skipIf(!ok)('reads as nibabel does', async () => {
    const info = python<{ path: string; affine: number[]; shape: number[]; sum: number }>(
      'import os, json, nibabel as nib, numpy as np\n' +
        'p = os.path.join(os.path.dirname(nib.__file__), "tests", "data", "test.mgz")\n' +
        'img = nib.load(p)\n' +
        'print(json.dumps({"path": p, "affine": img.affine.ravel().tolist(), "shape": [int(s) for s in img.shape], "sum": float(np.asarray(img.get_fdata(), dtype=np.float64).sum())}))',
    );
    if (!existsSync(info.path)) return;
    const v = await readVolume(info.path);
    expectClose(v.affine, info.affine, 1e-6, 1e-5, 'test.mgz affine');
    const vals = await values(v);
    let s = 0;
    for (const x of vals) s += x;
    expect(s).toBeCloseTo(info.sum, 0);
    expect(v.data.size).toBe(info.shape.reduce((a, b) => a * b, 1));
    v.data.dispose();
  });
});
