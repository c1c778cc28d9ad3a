/**
 * .hdr/.img pairs (NIfTI-1/2 `ni1`/`ni2`, Analyze 7.5), 1×1×1 images, precision and pixdim
 * warnings, against test/fixtures/pair_fixtures.json (make_pair_fixtures.py: nibabel 5.0 wrote
 * the files and nib.load read them back); pair writing (atomic, EXISTS, nibabel reads ours).
 */
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initBackend, tf } from '@regkit/core';
import { encodeNifti, RegkitIOError, readNifti, writeNifti } from '@regkit/io';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  expectClose,
  type FixValue,
  fixValue,
  hasNibabel,
  makeAffine,
  python,
  tempDir,
} from './helpers.js';

interface PairCase {
  name: string;
  read: string;
  files: string[];
  nibabel: string;
  shape: number[];
  affine: number[];
  data: FixValue[];
  maxError?: number;
  lossy?: number;
}

const pairs = JSON.parse(
  readFileSync(new URL('./fixtures/pair_fixtures.json', import.meta.url), 'utf8'),
) as { cases: PairCase[] };
const pairPath = (f: string) => fileURLToPath(new URL(`./fixtures/pairs/${f}`, import.meta.url));
const byName = (n: string) => pairs.cases.find((c) => c.name === n)!;

const c30 = Math.cos(Math.PI / 6);
const s30 = Math.sin(Math.PI / 6);
const OBLIQUE = makeAffine(
  [
    [1.5 * c30, -2 * s30, 0],
    [1.5 * s30, 2 * c30, 0],
    [0, 0, -2.5],
  ],
  [-20.5, 13.25, 60],
);

const tmp = tempDir();
beforeAll(async () => {
  expect(await initBackend('cpu')).toBe('cpu');
});
afterAll(() => tmp.cleanup());

async function errorOf(p: Promise<unknown>): Promise<RegkitIOError> {
  try {
    const v = (await p) as { data?: tf.Tensor };
    v?.data?.dispose();
  } catch (e) {
    expect(e).toBeInstanceOf(RegkitIOError);
    return e as RegkitIOError;
  }
  throw new Error('expected a RegkitIOError');
}

/** A fresh sub-directory of the temp dir holding copies of `files`. */
let dirs = 0;
function copyTo(files: string[], rename?: (f: string) => string): string {
  const dir = join(tmp.dir, `d${dirs++}`);
  mkdirSync(dir);
  for (const f of files) copyFileSync(pairPath(f), join(dir, rename ? rename(f) : f));
  return dir;
}

describe('reading pairs and edge cases like nib.load', () => {
  it.each(pairs.cases)('$name ($nibabel)', async (c) => {
    const vol = await readNifti(pairPath(c.read));
    expect(vol.data.shape).toEqual(c.shape);
    expectClose(vol.affine, c.affine, 1e-6, 1e-6, 'affine');
    expectClose(await vol.data.data(), c.data.map(fixValue), 1e-6, 1e-6, 'data');
    vol.data.dispose();
  });

  it('either file of a pair, any compression suffix, and bytes + imageBytes', async () => {
    for (const c of pairs.cases.filter((x) => x.files.length === 2)) {
      for (const f of c.files) {
        const vol = await readNifti(pairPath(f));
        expect(vol.data.shape, f).toEqual(c.shape);
        expectClose(await vol.data.data(), c.data.map(fixValue), 1e-6, 1e-6, f);
        vol.data.dispose();
      }
      const [hdr, img] = c.files.map((f) => new Uint8Array(readFileSync(pairPath(f))));
      const vol = await readNifti(hdr!, { name: c.files[0]!, imageBytes: img! });
      expectClose(await vol.data.data(), c.data.map(fixValue), 1e-6, 1e-6, `${c.name} bytes`);
      vol.data.dispose();
    }
    // x.img.gz whose header is not compressed: the other suffix is tried next
    const dir = copyTo(['ni1_int16.hdr']);
    writeFileSync(
      join(dir, 'ni1_int16.img.gz'),
      readFileSync(pairPath('ni1_gz.img.gz')), // the same voxels, gzip
    );
    const mixed = await readNifti(join(dir, 'ni1_int16.img.gz'));
    expectClose(
      await mixed.data.data(),
      byName('ni1_int16').data.map(fixValue),
      1e-6,
      1e-6,
      'mixed',
    );
    mixed.data.dispose();
  });

  it('header.fileFormat and Analyze defaults (codes 0, affine from pixdim + origin)', async () => {
    const formats: Record<string, string> = {
      'ni1_int16.hdr': 'nifti-pair',
      'ni2_float32.hdr': 'nifti-pair',
      'analyze_origin.hdr': 'analyze',
      'one_voxel.nii': 'nifti',
    };
    for (const [f, fmt] of Object.entries(formats)) {
      const v = await readNifti(pairPath(f));
      expect(v.header.fileFormat, f).toBe(fmt);
      if (fmt === 'analyze') {
        expect(v.header.qformCode).toBe(0);
        expect(v.header.sformCode).toBe(0);
        expect(v.header.affineSource).toBe('pixdim');
      }
      expect(v.header.version).toBe(f.startsWith('ni2') ? 2 : 1);
      v.data.dispose();
    }
  });

  it('a 1×1×1 image is 3D [1, 1, 1, 1, 1] (nibabel shape (1, 1, 1)), not 2D', async () => {
    const v = await readNifti(pairPath('one_voxel.nii'));
    expect(v.data.shape).toEqual([1, 1, 1, 1, 1]);
    expect(v.spacing).toEqual([2, 2, 2]);
    expect(Array.from(await v.data.data())).toEqual([42.5]);
    v.data.dispose();
  });

  it('dims 6 and 7 become channels (C order of dim[4..7], as nibabel reshape(nx, ny, nz, -1))', async () => {
    // storage value at i + 2·block is 10·i + block; block = Fortran index of (t, v, w)
    const vals = new Float32Array(12);
    for (let i = 0; i < 2; i++) for (let c = 0; c < 6; c++) vals[i * 6 + c] = 10 * i + c;
    const bytes = encodeNifti({ data: tf.tensor(vals, [1, 2, 1, 1, 6]), affine: OBLIQUE });
    const dv = new DataView(bytes.buffer);
    for (const [i, d] of [6, 2, 1, 1, 1, 2, 3, 1].entries()) dv.setInt16(40 + 2 * i, d, true);
    const vol = await readNifti(bytes, { name: 'six.nii' });
    expect(vol.data.shape).toEqual([1, 2, 1, 1, 6]);
    const got = Array.from(await vol.data.data());
    const want: number[] = [];
    for (let i = 0; i < 2; i++)
      for (let v = 0; v < 2; v++) for (let w = 0; w < 3; w++) want.push(10 * i + (v + 2 * w));
    expect(got).toEqual(want);
    vol.data.dispose();
  });

  it('missing partner file: NOTFOUND naming it', async () => {
    const dir = copyTo(['ni1_int16.hdr']);
    const e = await errorOf(readNifti(join(dir, 'ni1_int16.hdr')));
    expect(e.code).toBe('NOTFOUND');
    expect(e.file).toBe(join(dir, 'ni1_int16.img'));
    expect(e.message).toBe(
      `${join(dir, 'ni1_int16.img')}: no such file: the image file of the .hdr/.img pair ${join(dir, 'ni1_int16.hdr')} is missing (also tried ${join(dir, 'ni1_int16.img.gz')})`,
    );
    const dir2 = copyTo(['analyze_origin.img']);
    const e2 = await errorOf(readNifti(join(dir2, 'analyze_origin.img')));
    expect(e2.code).toBe('NOTFOUND');
    expect(e2.file).toBe(join(dir2, 'analyze_origin.hdr'));
    expect(e2.message).toContain('the header file of the .hdr/.img pair');
    const e3 = await errorOf(readNifti(join(dir2, 'nothing.hdr')));
    expect(e3.message).toBe(`${join(dir2, 'nothing.hdr')}: no such file`);
  });

  it('mismatched sizes: a short .img throws SIZE naming the .img', async () => {
    const dir = copyTo(['analyze_origin.hdr', 'analyze_origin.img']);
    const img = join(dir, 'analyze_origin.img');
    writeFileSync(img, readFileSync(img).subarray(0, 100));
    const e = await errorOf(readNifti(join(dir, 'analyze_origin.hdr')));
    expect(e.code).toBe('SIZE');
    expect(e.file).toBe(img);
    expect(e.message).toMatch(
      /^.*analyze_origin\.img: truncated: dims 5×4×3×1 × 4 bytes \(float32\) need 240 bytes/,
    );
    // with bytes too (image name derived from the header's)
    const hdr = new Uint8Array(readFileSync(join(dir, 'analyze_origin.hdr')));
    const eb = await errorOf(
      readNifti(hdr, { name: 'a.hdr', imageBytes: new Uint8Array(readFileSync(img)) }),
    );
    expect(eb.code).toBe('SIZE');
    expect(eb.file).toBe('a.img');
    // a NIfTI pair header read as a single file is refused clearly
    const em = await errorOf(readNifti(new Uint8Array(readFileSync(pairPath('ni1_int16.hdr')))));
    expect(em.code).toBe('MAGIC');
    expect(em.message).toContain('.hdr/.img');
  });

  it('an SPM .mat next to an Analyze pair is reported as not read', async () => {
    const dir = copyTo(['analyze_origin.hdr', 'analyze_origin.img']);
    writeFileSync(join(dir, 'analyze_origin.mat'), new Uint8Array(8));
    const v = await readNifti(join(dir, 'analyze_origin.img'));
    expect(v.warnings).toHaveLength(1);
    expect(v.warnings![0]).toMatch(/analyze_origin\.hdr: .*analyze_origin\.mat .* is not read/);
    v.data.dispose();
  });
});

describe('warnings', () => {
  it.each(['int64_big', 'uint32_big'])(
    '%s: values beyond 2^24 → datatype + max error',
    async (n) => {
      const c = byName(n);
      const path = pairPath(c.read);
      const v = await readNifti(path);
      const dtype = n.startsWith('int64') ? 'int64' : 'uint32';
      expect(v.warnings).toEqual([
        expect.stringMatching(
          new RegExp(
            `^${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: ${c.lossy} of \\d+ ${dtype} values do not survive float32 .*max error ${c.maxError},`,
          ),
        ),
      ]);
      v.data.dispose();
    },
  );

  it('bad pixdim (negative, 0, NaN) → warning and the documented fallback', async () => {
    const path = pairPath('bad_pixdim.nii');
    const v = await readNifti(path);
    expectClose(v.affine, byName('bad_pixdim').affine, 1e-7, 1e-7, 'nibabel fallback');
    expect(v.warnings).toEqual([
      `${path}: invalid voxel size pixdim[1] = -2, pixdim[2] = 0 (must be finite and > 0); used |pixdim| for negative and 1 for zero or non-finite values in the qform affine (voxel sizes 2, 1, 3)`,
    ]);
    v.data.dispose();
    const bytes = new Uint8Array(readFileSync(path));
    new DataView(bytes.buffer).setFloat32(88, Number.NaN, true); // pixdim[3]
    const n = await readNifti(bytes, { name: 'nan.nii' });
    expect(n.affine.slice(0, 11)).toEqual([2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
    expect(n.warnings![0]).toContain('pixdim[3] = NaN');
    n.data.dispose();
  });
});

function rampVolume() {
  const shape = [1, 5, 4, 3, 1];
  const v = Float32Array.from({ length: 60 }, (_, i) => i * 1.5 - 7);
  return { data: tf.tensor(v, shape), affine: OBLIQUE, values: v };
}

describe('writing pairs', () => {
  it('.hdr or .img → x.hdr (348 bytes, ni1, vox_offset 0) + x.img; read back equal', async () => {
    const vol = rampVolume();
    for (const ext of ['hdr', 'img', 'IMG']) {
      const dir = join(tmp.dir, `w_${ext}`);
      mkdirSync(dir);
      await writeNifti(join(dir, `out.${ext}`), vol);
      const up = ext === 'IMG';
      const hdrPath = join(dir, up ? 'out.HDR' : 'out.hdr');
      const imgPath = join(dir, up ? 'out.IMG' : 'out.img');
      expect(readdirSync(dir).sort()).toEqual(up ? ['out.HDR', 'out.IMG'] : ['out.hdr', 'out.img']);
      const hdr = readFileSync(hdrPath);
      expect(hdr.length).toBe(348);
      expect(hdr.subarray(344, 348)).toEqual(Buffer.from([0x6e, 0x69, 0x31, 0]));
      expect(hdr.readFloatLE(108)).toBe(0);
      expect(statSync(imgPath).size).toBe(60 * 4);
      const back = await readNifti(hdrPath);
      expect(back.header.fileFormat).toBe('nifti-pair');
      expect(back.data.shape).toEqual([1, 5, 4, 3, 1]);
      expectClose(back.affine, OBLIQUE, 1e-6, 1e-5, 'affine');
      expectClose(await back.data.data(), vol.values, 0, 0, 'values');
      back.data.dispose();
    }
    // gzip pair and NIfTI-2 pair
    await writeNifti(join(tmp.dir, 'gz.img.gz'), vol, { datatype: 'int16' });
    expect(existsSync(join(tmp.dir, 'gz.hdr.gz'))).toBe(true);
    const g = await readNifti(join(tmp.dir, 'gz.hdr.gz'));
    expectClose(await g.data.data(), Array.from(vol.values, Math.round), 0, 0, 'int16');
    g.data.dispose();
    await writeNifti(join(tmp.dir, 'v2.hdr'), vol, { version: 2 });
    const h2 = readFileSync(join(tmp.dir, 'v2.hdr'));
    expect(h2.length).toBe(540);
    expect(h2.subarray(4, 12)).toEqual(Buffer.from([0x6e, 0x69, 0x32, 0, 0x0d, 0x0a, 0x1a, 0x0a]));
    const r2 = await readNifti(join(tmp.dir, 'v2.img'));
    expectClose(await r2.data.data(), vol.values, 0, 0, 'v2');
    r2.data.dispose();
    vol.data.dispose();
  });

  it('atomic: overwrite false refuses if either file exists, writes nothing; no temp files', async () => {
    const vol = rampVolume();
    const dir = join(tmp.dir, 'atomic');
    mkdirSync(dir);
    writeFileSync(join(dir, 'x.img'), 'old');
    const e = await errorOf(writeNifti(join(dir, 'x.hdr'), vol, { overwrite: false }));
    expect(e.code).toBe('EXISTS');
    expect(e.file).toBe(join(dir, 'x.img'));
    expect(readdirSync(dir)).toEqual(['x.img']);
    expect(readFileSync(join(dir, 'x.img'), 'utf8')).toBe('old');
    await writeNifti(join(dir, 'x.hdr'), vol); // overwrite: both replaced
    expect(readdirSync(dir).sort()).toEqual(['x.hdr', 'x.img']);
    expect(statSync(join(dir, 'x.img')).size).toBe(240);
    const bad = await errorOf(writeNifti(join(dir, 'missing', 'y.hdr'), vol));
    expect(bad.code).toBe('IO');
    expect(bad.file).toBe(join(dir, 'missing', 'y.img'));
    expect(readdirSync(dir).sort()).toEqual(['x.hdr', 'x.img']);
    const path = await errorOf(writeNifti(join(dir, 'y.png'), vol));
    expect(path.code).toBe('PATH');
    expect(path.message).toContain('.hdr or .img');
    vol.data.dispose();
  });

  it.skipIf(!hasNibabel())(
    'nibabel reads our pairs (Nifti1Pair, same affine and data)',
    async () => {
      const vol = rampVolume();
      const p = join(tmp.dir, 'nib.img');
      await writeNifti(p, vol);
      const got = python<{ cls: string; shape: number[]; affine: number[]; data: number[] }>(
        `import sys, json, nibabel as nib, numpy as np
img = nib.load(sys.argv[1])
print(json.dumps({"cls": type(img).__name__, "shape": list(img.shape), "affine": img.affine.ravel().tolist(), "data": np.asarray(img.get_fdata()).ravel().tolist()}))`,
        [p],
      );
      expect(got.cls).toBe('Nifti1Pair');
      expect(got.shape).toEqual([5, 4, 3]);
      expectClose(got.affine, OBLIQUE, 1e-6, 1e-5, 'affine');
      expectClose(got.data, vol.values, 0, 0, 'data');
      vol.data.dispose();
    },
  );
});
