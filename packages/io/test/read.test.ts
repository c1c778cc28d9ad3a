/**
 * readNifti against test/fixtures/io_fixtures.json (make_io_fixtures.py: nibabel 5.0 writes
 * every datatype, scaling, sform/qform/neither, NIfTI-2, big-endian, extensions, 4D/5D, 2D,
 * NaN/Inf, and reads them back), real files, and every validation error.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { initBackend, tf } from '@regkit/core';
import { DEFAULT_MAX_VOXELS, finiteMask, RegkitIOError, readNifti } from '@regkit/io';
import { gzipSync } from 'fflate';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  expectClose,
  fixtureByName,
  fixtureBytes,
  fixturePath,
  fixtures,
  fixValue,
  hasNibabel,
  python,
  realPath,
  SHARED_DATA,
  sum64,
} from './helpers.js';

beforeAll(async () => {
  expect(await initBackend('cpu')).toBe('cpu');
});

/** The error a promise rejects with (fails when it resolves). */
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

describe('readNifti: nibabel fixtures', () => {
  it.each(fixtures.files.filter((f) => !f.nonfinite))('$file', async (f) => {
    const before = tf.memory().numTensors;
    for (const source of ['path', 'bytes'] as const) {
      const vol = await readNifti(source === 'path' ? fixturePath(f.file) : fixtureBytes(f.file), {
        name: f.file,
      });
      expect(vol.data.shape).toEqual(f.shape);
      expect(vol.data.dtype).toBe('float32');
      expectClose(vol.affine, f.affine, 1e-12, 1e-12, `${f.file} affine`);
      const nd = f.shape.length - 2;
      const cols = [0, 1, 2]
        .slice(0, nd)
        .map((j) => Math.hypot(f.affine[j]!, f.affine[4 + j]!, f.affine[8 + j]!));
      expectClose(vol.spacing, cols, 1e-12, 1e-12, 'spacing');
      const want = f.data.map(fixValue).map((v) => Math.fround(v));
      expectClose(await vol.data.data(), want, 1e-7, 0, `${f.file} data`);
      const h = vol.header;
      expect(h.version).toBe(f.version);
      expect(h.datatype).toBe(f.datatype);
      expect(h.dims).toEqual(f.dims.map(Number));
      expect(h.sclSlope).toBe(fixValue(f.sclSlope));
      expect(h.sclInter).toBe(fixValue(f.sclInter));
      expect(h.qformCode).toBe(f.qformCode);
      expect(h.sformCode).toBe(f.sformCode);
      expect(h.intentCode).toBe(f.intentCode);
      expect(h.description).toBe(f.description);
      vol.data.dispose();
    }
    expect(tf.memory().numTensors).toBe(before);
  });

  it('the sform wins over the qform; the qform is still reported', async () => {
    const vol = await readNifti(fixturePath('sform_and_qform.nii'));
    expect(vol.header.affineSource).toBe('sform');
    expect(vol.header.qform).not.toBeNull();
    expect(vol.header.qform).not.toEqual(vol.affine);
    vol.data.dispose();
    const q = await readNifti(fixturePath('qform_only.nii.gz'));
    expect(q.header.affineSource).toBe('qform');
    expect(q.header.pixdim[0]).toBe(-1);
    q.data.dispose();
    const n = await readNifti(fixturePath('no_xform.nii'));
    expect(n.header.affineSource).toBe('pixdim');
    n.data.dispose();
  });

  it('2D: dim[3] = 1 gives [1, nx, ny, C]; 4D/5D files give channels', async () => {
    const s = await readNifti(fixturePath('slice2d.nii.gz'));
    expect(s.data.shape).toEqual([1, 6, 5, 1]);
    expect(s.spacing).toEqual([0.5, 0.75]);
    s.data.dispose();
    const v = await readNifti(fixturePath('vector5d.nii'));
    expect(v.data.shape).toEqual([1, 4, 3, 2, 3]);
    expect(v.header.intentCode).toBe(1007);
    v.data.dispose();
  });

  it('NaN/Inf voxels are read as they are and reported in warnings (count + file name)', async () => {
    const f = fixtureByName('nonfinite.nii');
    const vol = await readNifti(fixturePath(f.file));
    expectClose(await vol.data.data(), f.data.map(fixValue).map(Math.fround), 1e-7, 0);
    expect(vol.warnings).toHaveLength(1);
    expect(vol.warnings![0]).toBe(
      `${fixturePath(f.file)}: 3 of 18 values are NaN or ±Inf; they are kept as they are (finiteMask(volume) is 0 there)`,
    );
    const mask = finiteMask(vol);
    expect(mask.shape).toEqual(vol.data.shape);
    expect(Array.from(await mask.data())).toEqual(
      f.data.map(fixValue).map((v) => (Number.isFinite(v) ? 1 : 0)),
    );
    mask.dispose();
    vol.data.dispose();
    // never zeroed: the same values from bytes; allowNonFinite: false refuses (NONFINITE)
    const e = await errorOf(readNifti(fixturePath(f.file), { allowNonFinite: false }));
    expect(e.code).toBe('NONFINITE');
    expect(e.message).toMatch(/^.*nonfinite\.nii: 3 of 18 values are NaN or ±Inf/);
    expect(e.file).toBe(fixturePath(f.file));
    const ok = await readNifti(fixtureBytes(f.file), { name: 'n.nii' });
    expect(ok.warnings).toEqual([
      'n.nii: 3 of 18 values are NaN or ±Inf; they are kept as they are (finiteMask(volume) is 0 there)',
    ]);
    ok.data.dispose();
    const clean = await readNifti(fixturePath('dt_float32.nii.gz'));
    expect(clean.warnings).toEqual([]);
    clean.data.dispose();
  });
});

describe('readNifti: real files', () => {
  it.each(fixtures.real)('$file', async (f) => {
    const path = realPath(f);
    if (!path) {
      console.warn(`skipped: ${f.file} not found (in test/data or ${SHARED_DATA}bundleable)`);
      return;
    }
    const t0 = performance.now();
    const vol = await readNifti(path);
    const ms = performance.now() - t0;
    if (f.file === 'colin27_ch2_t1.nii.gz') {
      console.log(`readNifti(${f.file}) ${f.shape.slice(1, -1).join('×')}: ${ms.toFixed(0)} ms`);
    }
    expect(vol.data.shape).toEqual(f.shape);
    expectClose(vol.affine, f.affine, 1e-12, 1e-12, 'affine');
    expect(await sum64(vol.data)).toBe(f.sum);
    const nd = f.shape.length - 2;
    const strides = vol.data.strides; // [batch, ...spatial] strides (C = 1)
    const values = await vol.data.data();
    for (const s of f.samples) {
      const idx = s.slice(0, nd);
      const flat = idx.reduce((acc, v, a) => acc + v * strides[a + 1]!, 0);
      expect(values[flat], `voxel ${idx}`).toBe(s[nd]);
    }
    vol.data.dispose();
  });

  it('the 2D ITK slices (181×217×1) become 2D [1, 181, 217, 1]', async () => {
    const f = fixtures.real.find((r) => r.file === 'itk_brainweb_t1_slice.nii.gz')!;
    const vol = await readNifti(realPath(f)!);
    expect(vol.data.shape).toEqual([1, 181, 217, 1]);
    expect(vol.spacing).toEqual([1, 1]);
    expect(vol.affine).toHaveLength(16);
    vol.data.dispose();
  });
});

const READ_ONLY = [
  'voxelmorph_test/voxelmorph_test_vol_t1.nii.gz', // float32, RAS
  'brats_case/t1n.nii.gz', // int16, LPS
  'ct_head/invesalius_promed_ct0051.nii.gz', // int16 Hounsfield units, anisotropic
].map((f) => join(SHARED_DATA, 'read-only', f));

describe('readNifti: read-only real files (optional, never copied)', () => {
  it('shapes, affines and voxel sums equal nibabel', async () => {
    const present = READ_ONLY.filter((f) => existsSync(f));
    if (present.length === 0 || !hasNibabel()) {
      console.warn(
        `skipped: ${join(SHARED_DATA, 'read-only')} ${present.length ? 'present but no python3/nibabel' : 'not found'}`,
      );
      return;
    }
    const want = python<Array<{ shape: number[]; affine: number[]; sum: number }>>(
      `
import json, sys, numpy as np, nibabel as nib
out = []
for p in sys.argv[1:]:
    img = nib.load(p)
    s = img.shape + (1,) * (5 - len(img.shape))
    spatial = [s[0], s[1]] if s[2] == 1 else [s[0], s[1], s[2]]
    out.append({'shape': [1, *spatial, s[3] * s[4]], 'affine': img.affine.ravel().tolist(),
                'sum': float(np.asarray(img.dataobj, dtype=np.float64).sum())})
print(json.dumps(out))
`,
      present,
    );
    for (let i = 0; i < present.length; i++) {
      const vol = await readNifti(present[i]!);
      expect(vol.data.shape).toEqual(want[i]!.shape);
      expectClose(vol.affine, want[i]!.affine, 1e-12, 1e-12, `${present[i]} affine`);
      const s = await sum64(vol.data);
      expect(Math.abs(s - want[i]!.sum)).toBeLessThanOrEqual(1e-6 * Math.abs(want[i]!.sum) + 1e-3);
      vol.data.dispose();
    }
  });
});

/** A valid little-endian NIfTI-1 file, to break in the tests below. */
function validFile(): Uint8Array {
  return fixtureBytes('dt_uint8.nii');
}

function setInt16(bytes: Uint8Array, offset: number, value: number): Uint8Array {
  const out = bytes.slice();
  new DataView(out.buffer).setInt16(offset, value, true);
  return out;
}

describe('readNifti: validation before allocation', () => {
  it('BUDGET: names the dims and the budget', async () => {
    const e = await errorOf(readNifti(validFile(), { name: 'small.nii', maxVoxels: 10 }));
    expect(e.code).toBe('BUDGET');
    expect(e.message).toBe(
      'small.nii: dims 5×4×3 = 60 values exceed the budget maxVoxels = 10 (raise maxVoxels to read it)',
    );
    // a header claiming 30000³ voxels is refused before anything is allocated
    let huge = setInt16(validFile(), 42, 30000);
    huge = setInt16(huge, 44, 30000);
    huge = setInt16(huge, 46, 30000);
    const e2 = await errorOf(readNifti(huge, { name: 'huge.nii' }));
    expect(e2.code).toBe('BUDGET');
    expect(e2.message).toContain('30000×30000×30000');
    expect(e2.message).toContain(DEFAULT_MAX_VOXELS.toLocaleString('en-US'));
    // also inside gzip
    const e3 = await errorOf(readNifti(gzipSync(huge), { name: 'huge.nii.gz' }));
    expect(e3.code).toBe('BUDGET');
  });

  it('DATATYPE names the code', async () => {
    const e = await errorOf(readNifti(setInt16(validFile(), 70, 128), { name: 'rgb.nii' }));
    expect(e.code).toBe('DATATYPE');
    expect(e.message).toMatch(/^rgb\.nii: unsupported datatype code 128 \(rgb24\)/);
    const e2 = await errorOf(readNifti(setInt16(validFile(), 70, 7), { name: 'x.nii' }));
    expect(e2.message).toMatch(/^x\.nii: unsupported datatype code 7;/);
  });

  it('SIZE: truncated voxel data names expected vs actual', async () => {
    const bytes = validFile();
    const e = await errorOf(readNifti(bytes.subarray(0, bytes.length - 7), { name: 't.nii' }));
    expect(e.code).toBe('SIZE');
    expect(e.message).toBe(
      't.nii: truncated: dims 5×4×3 × 1 bytes (uint8) need 60 bytes of voxel data after vox_offset 352, but the file has 53',
    );
    const e2 = await errorOf(readNifti(bytes.subarray(0, 200), { name: 'h.nii' }));
    expect(e2.code).toBe('SIZE');
    // truncated gzip content (valid stream, short file)
    const e3 = await errorOf(readNifti(gzipSync(bytes.subarray(0, 380)), { name: 'g.nii.gz' }));
    expect(e3.code).toBe('SIZE');
    expect(e3.message).toContain('but the file has 28');
  });

  it('GZIP: truncated or corrupt streams', async () => {
    const gz = readFileSync(fixturePath('dt_float32.nii.gz'));
    const e = await errorOf(
      readNifti(new Uint8Array(gz.subarray(0, gz.length - 20)), { name: 'a.nii.gz' }),
    );
    expect(e.code).toBe('GZIP');
    expect(e.message).toMatch(/^a\.nii\.gz: (truncated|corrupt) gzip stream/);
    const bad = new Uint8Array(gz);
    for (let i = 20; i < 60; i++) bad[i] = bad[i]! ^ 0x5a;
    const e2 = await errorOf(readNifti(bad, { name: 'b.nii.gz' }));
    expect(e2.code).toBe('GZIP');
  });

  it('MAGIC, DIMS, OFFSET, NOTFOUND', async () => {
    const notNifti = new TextEncoder().encode('hello '.repeat(100));
    expect((await errorOf(readNifti(notNifti, { name: 'x.txt' }))).code).toBe('MAGIC');
    const magic = validFile();
    magic[345] = 0x3f;
    const em = await errorOf(readNifti(magic, { name: 'm.nii' }));
    expect(em.code).toBe('MAGIC');
    expect(em.message).toContain("expected 'n+1'");
    const pair = validFile();
    pair[345] = 0x69; // 'ni1'
    expect((await errorOf(readNifti(pair, { name: 'p.nii' }))).message).toContain('.hdr/.img');
    const e0 = await errorOf(readNifti(setInt16(validFile(), 44, 0), { name: 'd.nii' }));
    expect(e0.code).toBe('DIMS');
    expect(e0.message).toMatch(/^d\.nii: dim\[2\] = 0: every dimension must be ≥ 1/);
    const e8 = await errorOf(readNifti(setInt16(validFile(), 40, 9), { name: 'd.nii' }));
    expect(e8.code).toBe('DIMS');
    const off = validFile();
    new DataView(off.buffer).setFloat32(108, 100, true);
    expect((await errorOf(readNifti(off, { name: 'o.nii' }))).code).toBe('OFFSET');
    const nf = await errorOf(readNifti('/nonexistent/dir/x.nii.gz'));
    expect(nf.code).toBe('NOTFOUND');
    expect(nf.message).toBe('/nonexistent/dir/x.nii.gz: no such file');
  });

  it('the file name starts every message, for paths too', async () => {
    const e = await errorOf(readNifti(fixturePath('nonfinite.nii'), { maxVoxels: 5 }));
    expect(e.message.startsWith(`${fixturePath('nonfinite.nii')}: `)).toBe(true);
    const e2 = await errorOf(readNifti(validFile(), { maxVoxels: 5 }));
    expect(e2.message.startsWith('<bytes>: ')).toBe(true);
  });
});

describe('readNifti: memory', () => {
  it('leaks no tensors over repeated reads', async () => {
    const before = tf.memory().numTensors;
    for (let r = 0; r < 5; r++) {
      for (const f of ['dt_int16_scaled.nii.gz', 'time4d.nii.gz', 'slice2d.nii.gz']) {
        const v = await readNifti(fixturePath(f));
        v.data.dispose();
      }
      (await readNifti(fixturePath('nonfinite.nii'))).data.dispose();
      await readNifti(fixturePath('nonfinite.nii'), { allowNonFinite: false }).catch(
        () => undefined,
      );
      await readNifti(validFile(), { maxVoxels: 1 }).catch(() => undefined);
    }
    expect(tf.memory().numTensors).toBe(before);
  });
});
