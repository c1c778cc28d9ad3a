/**
 * The command line reads and writes MetaImage, NRRD and MGH wherever it takes NIfTI:
 * `info`, `deform`, `register`, `apply`, `eval`. The same inputs in another format give the
 * same numbers as NIfTI (the format only changes the bytes on disk).
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tf } from '@regkit/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const here = fileURLToPath(new URL('.', import.meta.url));
const bin = resolve(here, '..', 'dist', 'bin.js');
const t1 = join(here, '..', 'data', 'itk_brainweb_t1_slice.nii.gz');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function regkit(args: string[], cwd: string): Promise<Run> {
  return new Promise((done) => {
    execFile(
      process.execPath,
      [bin, ...args],
      { cwd, maxBuffer: 1 << 24, env: { ...process.env, FORCE_COLOR: '0' } },
      (err, stdout, stderr) => {
        const code = err ? ((err as { code?: number }).code ?? 1) : 0;
        done({ code: typeof code === 'number' ? code : 1, stdout, stderr });
      },
    );
  });
}

let dir: string;
const p = (n: string) => join(dir, n);

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'regkit-cli-formats-'));
  const { initBackend } = await import('@regkit/core');
  const { readNifti, volumeLike, writeVolume } = await import('@regkit/io');
  const { intensityClasses } = await import('@regkit/cli');
  await initBackend('cpu');
  const v = await readNifti(t1);
  for (const f of ['t1.mha', 't1.nrrd', 't1.mgz', 't1.nii.gz']) {
    await writeVolume(p(f), v, { datatype: 'uint8', compress: f === 't1.nrrd' });
  }
  const labels = volumeLike(v, await intensityClasses(v.data));
  await writeVolume(p('labels.mgz'), labels, { datatype: 'uint8' });
  await writeVolume(p('labels.nii.gz'), labels, { datatype: 'uint8' });
  tf.dispose([v.data, labels.data]);
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

async function read(path: string): Promise<Float32Array> {
  const { readVolume } = await import('@regkit/io');
  const v = await readVolume(path);
  const d = (await v.data.data()) as Float32Array;
  v.data.dispose();
  return d;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

describe('regkit with MetaImage, NRRD and MGH files', () => {
  it('info reads .mha, .nrrd and .mgz as NIfTI (same shape, spacing, orientation, values)', async () => {
    const ref = JSON.parse((await regkit(['info', p('t1.nii.gz'), '--json'], dir)).stdout);
    for (const [f, format] of [
      ['t1.mha', 'MetaImage'],
      ['t1.nrrd', 'NRRD'],
      ['t1.mgz', 'MGH'],
    ]) {
      const r = await regkit(['info', p(f!), '--json'], dir);
      expect(r.code, r.stderr).toBe(0);
      const s = JSON.parse(r.stdout);
      expect(s.format).toBe(format);
      expect(s.shape).toEqual(ref.shape);
      expect(s.datatype).toBe('uint8');
      expect(s.orientation).toBe(ref.orientation);
      expect(s.min).toBe(ref.min);
      expect(s.max).toBe(ref.max);
      expect(s.mean).toBeCloseTo(ref.mean, 6);
      for (let i = 0; i < 4; i++) {
        for (let j = 0; j < 4; j++) expect(s.affine[i][j]).toBeCloseTo(ref.affine[i][j], 3);
      }
      const text = await regkit(['info', p(f!)], dir);
      expect(text.stdout).toContain(`${format} uint8`);
    }
  });

  it('deform → register → eval → apply in .mha/.nrrd/.mgz give the numbers of NIfTI', async () => {
    const deformArgs = ['--max-displacement', '6', '--control-spacing', '32', '--seed', '3'];
    const nii = await regkit(
      [
        'deform',
        '--image',
        p('t1.nii.gz'),
        '--out',
        p('fixed.nii.gz'),
        '--true-field',
        p('true.nii.gz'),
        '--labels',
        p('labels.nii.gz'),
        '--out-labels',
        p('fixed_labels.nii.gz'),
        ...deformArgs,
      ],
      dir,
    );
    expect(nii.code, nii.stderr).toBe(0);
    const other = await regkit(
      [
        'deform',
        '--image',
        p('t1.mha'),
        '--out',
        p('fixed.nrrd'),
        '--true-field',
        p('true.mha'),
        '--labels',
        p('labels.mgz'),
        '--out-labels',
        p('fixed_labels.mgz'),
        ...deformArgs,
      ],
      dir,
    );
    expect(other.code, other.stderr).toBe(0);
    expect(maxAbsDiff(await read(p('fixed.nrrd')), await read(p('fixed.nii.gz')))).toBe(0);
    expect(
      maxAbsDiff(await read(p('fixed_labels.mgz')), await read(p('fixed_labels.nii.gz'))),
    ).toBe(0);
    // the ITK vector image holds the same LPS vectors as the 5D NIfTI field
    expect(maxAbsDiff(await read(p('true.mha')), await read(p('true.nii.gz')))).toBeLessThan(1e-6);

    const reg = await regkit(
      [
        'register',
        '--fixed',
        p('fixed.nrrd'),
        '--moving',
        p('t1.mgz'),
        '--out',
        p('warped.mha'),
        '--field',
        p('field.nrrd'),
        '--inverse-field',
        '--moving-labels',
        p('labels.mgz'),
        '--out-labels',
        p('warped_labels.mgz'),
        '--similarity',
        'mi',
        '--levels',
        '2',
        '--json',
      ],
      dir,
    );
    expect(reg.code, reg.stderr).toBe(0);
    for (const f of ['warped.mha', 'field.nrrd', 'field_inverse.nrrd', 'warped_labels.mgz']) {
      expect(existsSync(p(f)), f).toBe(true);
    }
    const before = await regkit(
      [
        'eval',
        '--fixed-labels',
        p('fixed_labels.mgz'),
        '--warped-labels',
        p('labels.mgz'),
        '--json',
      ],
      dir,
    );
    const after = await regkit(
      [
        'eval',
        '--fixed-labels',
        p('fixed_labels.mgz'),
        '--warped-labels',
        p('warped_labels.mgz'),
        '--field',
        p('field.nrrd'),
        '--json',
      ],
      dir,
    );
    expect(after.code, after.stderr).toBe(0);
    expect(JSON.parse(after.stdout).meanDice).toBeGreaterThan(
      JSON.parse(before.stdout).meanDice + 0.1,
    );

    // the written .nrrd field reproduces the warped image, in any output format
    for (const [moving, out] of [
      ['t1.mgz', 'applied.mha'],
      ['t1.nii.gz', 'applied.nii.gz'],
    ]) {
      const r = await regkit(
        ['apply', '--moving', p(moving!), '--field', p('field.nrrd'), '--out', p(out!)],
        dir,
      );
      expect(r.code, r.stderr).toBe(0);
    }
    const applied = await read(p('applied.mha'));
    expect(maxAbsDiff(applied, await read(p('applied.nii.gz')))).toBe(0);
    expect(maxAbsDiff(applied, await read(p('warped.mha')))).toBeLessThan(0.05);
  });

  it('refuses output names it cannot write (exit 2, naming the endings); MGH fields are refused', async () => {
    const bad = await regkit(
      ['register', '--fixed', p('t1.mha'), '--moving', p('t1.mgz'), '--out', p('w.tiff')],
      dir,
    );
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--out .*w\.tiff: the file name must end with .*\.mha.*\.mgz/);
    const field = await regkit(
      [
        'register',
        '--fixed',
        p('t1.mha'),
        '--moving',
        p('t1.mgz'),
        '--out',
        p('w.mgz'),
        '--field',
        p('f.mgz'),
      ],
      dir,
    );
    expect(field.code).toBe(2);
    expect(field.stderr).toMatch(
      /--field .*f\.mgz: the file name must end with \.nii, \.nii\.gz, \.mha, \.nrrd$/m,
    );
    expect(existsSync(p('w.mgz'))).toBe(false);
  });
});
