/**
 * writeNifti / encodeNifti: TS round trips for every writable datatype, NIfTI-1/2, .nii and
 * .nii.gz, 2D/4D; header contents (sform + qform, pixdim from the affine); EXISTS and the
 * atomic write; and, when /usr/bin/python3 has nibabel, that nibabel reads our files the same.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { initBackend, tf } from '@regkit/core';
import {
  encodeDisplacementField,
  encodeDisplacementFieldChunks,
  encodeNifti,
  encodeNiftiChunks,
  type NiftiWriteDatatype,
  RegkitIOError,
  readNifti,
  type Volume,
  writeNifti,
} from '@regkit/io';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectClose, fixturePath, hasNibabel, makeAffine, python, tempDir } from './helpers.js';

const tmp = tempDir();
beforeAll(async () => {
  expect(await initBackend('cpu')).toBe('cpu');
});
afterAll(() => tmp.cleanup());

const c30 = Math.cos(Math.PI / 6);
const s30 = Math.sin(Math.PI / 6);
/** Oblique, flipped, anisotropic: rotation about z, then axis 2 flipped. */
const OBLIQUE = makeAffine(
  [
    [1.5 * c30, -2 * s30, 0],
    [1.5 * s30, 2 * c30, 0],
    [0, 0, -2.5],
  ],
  [-20.5, 13.25, 60],
);

function ramp(shape: number[], scale: number, offset: number): tf.Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) v[i] = ((i * 7919) % 1000) * scale + offset;
  return tf.tensor(v, shape, 'float32');
}

const DATATYPES: Array<[NiftiWriteDatatype, number, number]> = [
  ['float32', 0.37, -100],
  ['float64', 0.37, -100],
  ['uint8', 0.25, 0],
  ['int8', 0.25, -120],
  ['int16', 61, -30000],
  ['uint16', 61, 0],
  ['int32', 4e6, -2e9],
  ['uint32', 4e6, 0],
];

describe('writeNifti → readNifti round trip', () => {
  it.each(DATATYPES)('%s (.nii and .nii.gz)', async (datatype, scale, offset) => {
    const before = tf.memory().numTensors;
    const data = ramp([1, 5, 4, 3, 1], scale, offset);
    const want = await data.data();
    const expected = datatype.startsWith('float') ? Array.from(want) : Array.from(want, Math.round);
    for (const ext of ['.nii', '.nii.gz']) {
      const path = join(tmp.dir, `rt_${datatype}${ext}`);
      await writeNifti(path, { data, affine: OBLIQUE }, { datatype });
      const back = await readNifti(path);
      expect(back.header.datatype).toBe(datatype);
      expect(back.data.shape).toEqual([1, 5, 4, 3, 1]);
      expectClose(await back.data.data(), expected, 1e-7, 0, `${datatype}${ext}`);
      expectClose(back.affine, OBLIQUE, 1e-6, 1e-5, 'affine');
      expect(back.header.sformCode).toBe(1);
      expect(back.header.qformCode).toBe(1);
      // the qform holds the same rigid + zoom affine (no shear here)
      expectClose(back.header.qform!, OBLIQUE, 1e-6, 1e-5, 'qform');
      expectClose(back.header.pixdim.slice(1, 4), [1.5, 2, 2.5], 1e-6, 0, 'pixdim');
      expect(back.header.pixdim[0]).toBe(-1);
      back.data.dispose();
    }
    data.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('integer types round and clip', async () => {
    const data = tf.tensor([-300.6, -1.5, 0.4, 2.5, 255.2, 1000, Number.NaN, 7], [1, 2, 2, 2, 1]);
    const path = join(tmp.dir, 'clip.nii');
    await writeNifti(path, { data, affine: OBLIQUE }, { datatype: 'uint8' });
    const back = await readNifti(path);
    expect(Array.from(await back.data.data())).toEqual([0, 0, 0, 3, 255, 255, 0, 7]);
    tf.dispose([data, back.data]);
  });

  it('2D, 4D, NIfTI-2 and header reuse', async () => {
    const affine2d = makeAffine(
      [
        [-0.5, 0, 0],
        [0, 0.75, 0],
        [0, 0, 1],
      ],
      [3, 4, 5],
    );
    const img2d = ramp([1, 7, 6, 1], 1, 0);
    const p2 = join(tmp.dir, 'two.nii.gz');
    await writeNifti(p2, { data: img2d, affine: affine2d });
    const b2 = await readNifti(p2);
    expect(b2.data.shape).toEqual([1, 7, 6, 1]);
    expect(b2.header.dims.slice(0, 4)).toEqual([3, 7, 6, 1]);
    expectClose(await b2.data.data(), await img2d.data(), 0, 0);

    const img4d = ramp([1, 4, 3, 2, 5], 0.5, 1);
    const p4 = join(tmp.dir, 'four.nii');
    await writeNifti(p4, { data: img4d, affine: OBLIQUE }, { version: 2 });
    const b4 = await readNifti(p4);
    expect(b4.header.version).toBe(2);
    expect(b4.header.dims.slice(0, 5)).toEqual([4, 4, 3, 2, 5]);
    expectClose(await b4.data.data(), await img4d.data(), 0, 0);
    expectClose(b4.affine, OBLIQUE, 1e-15, 1e-13, 'NIfTI-2 affine (float64)');

    // a volume read from a file keeps its codes, description, 5D layout
    const v5 = await readNifti(fixturePath('vector5d.nii'));
    const p5 = join(tmp.dir, 'five.nii');
    await writeNifti(p5, v5);
    const b5 = await readNifti(p5);
    expect(b5.header.dims.slice(0, 6)).toEqual([5, 4, 3, 2, 1, 3]);
    expect(b5.header.sformCode).toBe(v5.header.sformCode);
    expectClose(await b5.data.data(), await v5.data.data(), 0, 0);
    tf.dispose([img2d, img4d, b2.data, b4.data, v5.data, b5.data]);
  });

  it('encodeNifti gives the bytes writeNifti writes (.nii), gzip optional', async () => {
    const data = ramp([1, 3, 3, 2, 1], 1, 0);
    const vol = { data, affine: OBLIQUE };
    const path = join(tmp.dir, 'enc.nii');
    await writeNifti(path, vol, { datatype: 'int16', description: 'hello' });
    const bytes = encodeNifti(vol, { datatype: 'int16', description: 'hello' });
    expect(new Uint8Array(readFileSync(path))).toEqual(bytes);
    const gz = encodeNifti(vol, { gzip: true });
    expect([gz[0], gz[1]]).toEqual([0x1f, 0x8b]);
    const back = await readNifti(gz);
    expect(back.header.description).toBe('');
    expectClose(await back.data.data(), await data.data(), 0, 0);
    tf.dispose([data, back.data]);
  });
});

describe('writeNifti: files', () => {
  it('overwrite: false throws EXISTS and keeps the file; no temporary files remain', async () => {
    const data = ramp([1, 2, 2, 2, 1], 1, 0);
    const path = join(tmp.dir, 'exists.nii.gz');
    writeFileSync(path, 'keep me');
    const err = await writeNifti(path, { data, affine: OBLIQUE }, { overwrite: false }).catch(
      (e) => e,
    );
    expect(err).toBeInstanceOf(RegkitIOError);
    expect(err.code).toBe('EXISTS');
    expect(err.message).toBe(`${path}: file exists and overwrite is false`);
    expect(readFileSync(path, 'utf8')).toBe('keep me');
    await writeNifti(path, { data, affine: OBLIQUE }); // overwrite: true by default
    (await readNifti(path)).data.dispose();
    const fresh = join(tmp.dir, 'fresh.nii');
    await writeNifti(fresh, { data, affine: OBLIQUE }, { overwrite: false });
    expect(readdirSync(tmp.dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    data.dispose();
  });

  it('rejects bad paths, shapes, affines and datatypes', async () => {
    const data = ramp([1, 2, 2, 2, 1], 1, 0);
    const code = async (p: Promise<unknown>) => ((await p.catch((e) => e)) as RegkitIOError).code;
    expect(await code(writeNifti(join(tmp.dir, 'x.png'), { data, affine: OBLIQUE }))).toBe('PATH');
    expect(await code(writeNifti(join(tmp.dir, 'x.nii'), { data, affine: [1, 2] }))).toBe('AFFINE');
    const singular = [...OBLIQUE];
    singular[10] = 0;
    singular[8] = 0;
    singular[9] = 0;
    expect(await code(writeNifti(join(tmp.dir, 'x.nii'), { data, affine: singular }))).toBe(
      'AFFINE',
    );
    const flat = tf.zeros([2, 2]);
    expect(await code(writeNifti(join(tmp.dir, 'x.nii'), { data: flat, affine: OBLIQUE }))).toBe(
      'SHAPE',
    );
    expect(
      await code(
        writeNifti(
          join(tmp.dir, 'x.nii'),
          { data, affine: OBLIQUE },
          {
            datatype: 'rgb24' as NiftiWriteDatatype,
          },
        ),
      ),
    ).toBe('DATATYPE');
    expect(
      await code(writeNifti(join(tmp.dir, 'missing-dir', 'x.nii'), { data, affine: OBLIQUE })),
    ).toBe('IO');
    tf.dispose([data, flat]);
  });
});

describe.skipIf(!hasNibabel())('nibabel reads our files identically', () => {
  it('datatypes, 2D, 4D, NIfTI-2, gzip, sheared sform', async () => {
    const cases: Array<{
      name: string;
      vol: Volume | { data: tf.Tensor; affine: number[] };
      opts: object;
    }> = [];
    const sheared = [...OBLIQUE];
    sheared[1] = sheared[1]! + 0.4;
    cases.push({
      name: 'nb_f32.nii.gz',
      vol: { data: ramp([1, 5, 4, 3, 1], 0.37, -100), affine: sheared },
      opts: {},
    });
    cases.push({
      name: 'nb_i16.nii',
      vol: { data: ramp([1, 5, 4, 3, 1], 61, -30000), affine: OBLIQUE },
      opts: { datatype: 'int16' },
    });
    cases.push({
      name: 'nb_u8_2d.nii',
      vol: { data: ramp([1, 6, 5, 1], 0.25, 0), affine: OBLIQUE },
      opts: { datatype: 'uint8' },
    });
    cases.push({
      name: 'nb_4d_v2.nii.gz',
      vol: { data: ramp([1, 3, 4, 2, 3], 1, 0), affine: OBLIQUE },
      opts: { version: 2 },
    });
    cases.push({
      name: 'nb_f64.nii',
      vol: { data: ramp([1, 2, 3, 4, 1], 0.1, 0), affine: OBLIQUE },
      opts: { datatype: 'float64' },
    });
    for (const c of cases) await writeNifti(join(tmp.dir, c.name), c.vol, c.opts);
    const got = python<
      Array<{ shape: number[]; affine: number[]; qform: number[]; data: number[]; dtype: string }>
    >(
      `
import json, sys, numpy as np, nibabel as nib
out = []
for p in sys.argv[1:]:
    img = nib.load(p)
    h = img.header
    s = img.shape + (1,) * (5 - len(img.shape))
    spatial = [s[0], s[1]] if s[2] == 1 else [s[0], s[1], s[2]]
    data = np.asarray(img.get_fdata()).reshape(*spatial, s[3] * s[4])
    out.append({'shape': [1, *spatial, s[3] * s[4]], 'affine': img.affine.ravel().tolist(),
                'qform': h.get_qform().ravel().tolist(), 'dtype': h.get_data_dtype().name,
                'data': data.ravel().tolist()})
print(json.dumps(out))
`,
      cases.map((c) => join(tmp.dir, c.name)),
    );
    for (let i = 0; i < cases.length; i++) {
      const c = cases[i]!;
      const g = got[i]!;
      const mine = await readNifti(join(tmp.dir, c.name));
      expect(g.shape, c.name).toEqual(mine.data.shape);
      expectClose(g.affine, mine.affine, 0, 1e-12, `${c.name} affine`);
      expectClose(g.affine, c.vol.affine, 1e-6, 1e-5, `${c.name} affine vs written`);
      expectClose(g.data, await mine.data.data(), 1e-7, 1e-7, `${c.name} data`);
      expect(g.dtype).toBe(mine.header.datatype);
      if (c.name !== 'nb_f32.nii.gz')
        expectClose(g.qform, c.vol.affine, 1e-6, 1e-5, `${c.name} qform`);
      mine.data.dispose();
      c.vol.data.dispose();
    }
  });
});

describe('encodeNifti: memory', () => {
  it('int32 data is encoded without leaking a cast', async () => {
    const data = tf.tensor([1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 2, 2, 1], 'int32');
    const before = tf.memory().numTensors;
    const bytes = encodeNifti({ data, affine: OBLIQUE }, { datatype: 'int16' });
    await writeNifti(join(tmp.dir, 'int32.nii'), { data, affine: OBLIQUE });
    expect(tf.memory().numTensors).toBe(before);
    const back = await readNifti(bytes);
    expect(Array.from(await back.data.data())).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    tf.dispose([data, back.data]);
  });
});

describe('encodeNiftiChunks / encodeDisplacementFieldChunks', () => {
  const concat = (c: { bytes: number; chunks: () => Generator<Uint8Array> }) => {
    const parts = [...c.chunks()];
    const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    expect(out.length).toBe(c.bytes);
    return { out, pieces: parts.length };
  };

  it('pieces concatenate to encodeNifti’s bytes (3D, 2D, channels, integer datatypes)', () => {
    const cases: Array<[number[], NiftiWriteDatatype | undefined]> = [
      [[1, 7, 5, 6, 1], undefined],
      [[1, 7, 5, 6, 4], undefined],
      [[1, 9, 8, 1], undefined],
      [[1, 6, 5, 4, 1], 'uint8'],
      [[1, 6, 5, 4, 2], 'int16'],
    ];
    for (const [shape, datatype] of cases) {
      const data = tf.mul(tf.randomNormal(shape, 0, 1, 'float32', 3), 70);
      const volume = { data, affine: OBLIQUE };
      const opts = datatype ? { datatype } : {};
      const whole = encodeNifti(volume, opts);
      // one plane per piece (many pieces) and the default (one piece of voxels)
      const small = concat(encodeNiftiChunks(volume, { ...opts, chunkBytes: 1 }));
      const big = concat(encodeNiftiChunks(volume, opts));
      expect(small.out).toEqual(whole);
      expect(big.out).toEqual(whole);
      const planes = (shape.length === 5 ? shape[3]! : 1) * shape[shape.length - 1]!;
      expect(small.pieces).toBe(1 + planes);
      expect(big.pieces).toBe(2);
      data.dispose();
    }
  });

  it('field pieces concatenate to encodeDisplacementField’s bytes (2D and 3D, oblique)', async () => {
    for (const spatial of [
      [6, 5, 4],
      [7, 9],
    ]) {
      const data = tf.zeros([1, ...spatial, 1]);
      const reference: Volume = (await readNifti(encodeNifti({ data, affine: OBLIQUE }))) as Volume;
      const field = tf.randomNormal([1, ...spatial, spatial.length], 0, 2, 'float32', 9);
      const whole = encodeDisplacementField(field, reference);
      expect(concat(encodeDisplacementFieldChunks(field, reference, 1)).out).toEqual(whole);
      expect(concat(encodeDisplacementFieldChunks(field, reference)).out).toEqual(whole);
      tf.dispose([data, reference.data, field]);
    }
  });

  it('checks the volume before the first piece', () => {
    const data = tf.zeros([2, 3, 3, 1]);
    expect(() => encodeNiftiChunks({ data, affine: OBLIQUE })).toThrow(RegkitIOError);
    data.dispose();
  });
});
