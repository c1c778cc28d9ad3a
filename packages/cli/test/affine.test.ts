/**
 * `regkit register --transform affine` / `--affine-out` and `regkit apply --affine`: a known
 * 3D affine recovered within 0.5 voxel RMS, the ITK file read back to the same affine, the
 * total --field equal to the affine's displacement, apply reproducing the registered output,
 * the pipeline in --help, and usage errors (exit 2) naming the flag.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initBackend, tf, warp } from '@regkit/core';
import {
  defaultHeader,
  itkToVoxelAffine,
  readDisplacementField,
  readItkAffine,
  readNifti,
  type Volume,
  writeNifti,
} from '@regkit/io';
import { affineDisplacement } from '@regkit/register';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const here = fileURLToPath(new URL('.', import.meta.url));
const bin = resolve(here, '..', 'dist', 'bin.js');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function regkit(args: string[]): Promise<Run> {
  return new Promise((done) => {
    execFile(
      process.execPath,
      [bin, ...args],
      { cwd: dir, maxBuffer: 1 << 24, env: { ...process.env, FORCE_COLOR: '0' } },
      (err, stdout, stderr) => {
        const code = err ? ((err as { code?: number }).code ?? 1) : 0;
        done({ code: typeof code === 'number' ? code : 1, stdout, stderr });
      },
    );
  });
}

const S = [32, 36, 32];
// 10° about axis 2, scales 1.06/0.96/1.03, translation (3, −2, 2) voxels, about the centre
const truth = (() => {
  const th = (10 * Math.PI) / 180;
  const a = [
    [Math.cos(th) * 1.06, -Math.sin(th) * 0.96, 0],
    [Math.sin(th) * 1.06, Math.cos(th) * 0.96, 0],
    [0, 0, 1.03],
  ];
  const c = S.map((s) => (s - 1) / 2);
  const tc = [3, -2, 2];
  return a.map((row, i) => [...row, tc[i]! + c[i]! - row.reduce((s, v, k) => s + v * c[k]!, 0)]);
})();

let dir: string;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'regkit-cli-affine-'));
  await initBackend('cpu');
  // a textured blob (moving), and fixed = moving ∘ truth, on 1.5 mm LAS-ish grids
  const moving = tf.tidy(() => {
    const ax = (n: number, k: number) =>
      tf.reshape(tf.range(0, n), [1, ...S.map((_, j) => (j === k ? n : 1)), 1]);
    const [i, j, k] = [ax(S[0]!, 0), ax(S[1]!, 1), ax(S[2]!, 2)];
    const r2 = tf.add(
      tf.add(tf.square(tf.div(tf.sub(i, 15), 9)), tf.square(tf.div(tf.sub(j, 18), 11))),
      tf.square(tf.div(tf.sub(k, 16), 8)),
    );
    const blob = tf.exp(tf.neg(r2));
    const texture = tf.add(
      1,
      tf.mul(0.5, tf.mul(tf.sin(tf.mul(i, 0.45)), tf.cos(tf.add(tf.mul(j, 0.35), tf.mul(k, 0.3))))),
    );
    return tf.mul(tf.mul(blob, texture), 100);
  });
  const fixed = tf.tidy(() => warp(moving, affineDisplacement(tf.tensor3d([truth]), S)));
  const affine = [-1.5, 0, 0, 24, 0, 1.5, 0, -27, 0, 0, 1.5, -20, 0, 0, 0, 1];
  const vol = (data: tf.Tensor): Volume => ({
    data,
    affine,
    spacing: [1.5, 1.5, 1.5],
    header: defaultHeader(S, 1),
  });
  await writeNifti(join(dir, 'moving.nii'), vol(moving));
  await writeNifti(join(dir, 'fixed.nii'), vol(fixed));
  tf.dispose([moving, fixed]);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('regkit register --transform affine, --affine-out, apply --affine', () => {
  it('recovers a known 3D affine within 0.5 voxel RMS; the .txt and --field agree', async () => {
    const r = await regkit([
      'register',
      '--fixed',
      'fixed.nii',
      '--moving',
      'moving.nii',
      '--out',
      'warped.nii',
      '--transform',
      'affine',
      '--similarity',
      'mse',
      '--field',
      'field.nii.gz',
      '--affine-out',
      'affine.txt',
      '--backend',
      'cpu',
      '--json',
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(/regkit: /);
    const summary = JSON.parse(r.stdout) as { pipeline: string[]; affine: number[][] };
    expect(summary.pipeline).toEqual(['affine']);
    const got = summary.affine;
    // RMS over the interior of |a(x) − truth(x)|
    let s2 = 0;
    let n = 0;
    for (let i = 4; i < S[0]! - 4; i += 2)
      for (let j = 4; j < S[1]! - 4; j += 2)
        for (let k = 4; k < S[2]! - 4; k += 2, n++) {
          for (let d = 0; d < 3; d++) {
            const x = [i, j, k, 1];
            const e =
              got[d]!.reduce((s, v, c) => s + v * x[c]!, 0) -
              truth[d]!.reduce((s, v, c) => s + v * x[c]!, 0);
            s2 += e * e;
          }
        }
    expect(Math.sqrt(s2 / n)).toBeLessThan(0.5);
    const text = readFileSync(join(dir, 'affine.txt'), 'utf8');
    expect(text).toMatch(/^#Insight Transform File V1.0\n/);
    expect(text).toContain('Transform: AffineTransform_double_3_3');
    const fixed = await readNifti(join(dir, 'fixed.nii'));
    const back = itkToVoxelAffine(await readItkAffine(join(dir, 'affine.txt')), fixed, fixed);
    const b = (await back.array()) as number[][][];
    for (let i = 0; i < 3; i++)
      for (let j = 0; j < 4; j++) expect(b[0]![i]![j]!).toBeCloseTo(got[i]![j]!, 4);
    // --field is the affine's displacement (the total)
    const u = await readDisplacementField(join(dir, 'field.nii.gz'), fixed);
    const want = affineDisplacement(back, S);
    const diff = tf.max(tf.abs(tf.sub(u, want))).dataSync()[0]!;
    expect(diff).toBeLessThan(1e-3);
    tf.dispose([fixed.data, back, u, want]);

    // apply --affine reproduces the registered output (one resampling, same map)
    const a = await regkit([
      'apply',
      '--moving',
      'moving.nii',
      '--affine',
      'affine.txt',
      '--reference',
      'fixed.nii',
      '--out',
      'applied.nii',
      '--backend',
      'cpu',
    ]);
    expect(a.code, a.stderr).toBe(0);
    const w = await readNifti(join(dir, 'warped.nii'));
    const p = await readNifti(join(dir, 'applied.nii'));
    const err = tf.max(tf.abs(tf.sub(w.data, p.data))).dataSync()[0]!;
    const range = tf.max(w.data).dataSync()[0]!;
    expect(err).toBeLessThan(1e-3 * range);
    // and --field applies to the same output
    const f = await regkit([
      'apply',
      '--moving',
      'moving.nii',
      '--field',
      'field.nii.gz',
      '--out',
      'applied_field.nii',
      '--backend',
      'cpu',
    ]);
    expect(f.code).toBe(0);
    const q = await readNifti(join(dir, 'applied_field.nii'));
    expect(tf.max(tf.abs(tf.sub(w.data, q.data))).dataSync()[0]!).toBeLessThan(1e-2 * range);
    tf.dispose([w.data, p.data, q.data]);
  });

  it('default pipeline: apply --affine A --field D (deformable part) = the registered output', async () => {
    const r = await regkit([
      'register',
      '--fixed',
      'fixed.nii',
      '--moving',
      'moving.nii',
      '--out',
      'pipe.nii',
      '--similarity',
      'mse',
      '--levels',
      '2',
      '--iterations',
      '10,5',
      '--affine-iterations',
      '20,15,10',
      '--affine-out',
      'pipe.mat',
      '--deformable-field',
      'pipe_def.nii.gz',
      '--field',
      'pipe_total.nii.gz',
      '--backend',
      'cpu',
      '--json',
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { pipeline: string[] }).pipeline).toEqual([
      'affine',
      'velocity',
    ]);
    const a = await regkit([
      'apply',
      '--moving',
      'moving.nii',
      '--affine',
      'pipe.mat',
      '--field',
      'pipe_def.nii.gz',
      '--out',
      'pipe_applied.nii',
      '--backend',
      'cpu',
    ]);
    expect(a.code, a.stderr).toBe(0);
    const w = await readNifti(join(dir, 'pipe.nii'));
    const p = await readNifti(join(dir, 'pipe_applied.nii'));
    const range = tf.max(w.data).dataSync()[0]!;
    expect(tf.max(tf.abs(tf.sub(w.data, p.data))).dataSync()[0]!).toBeLessThan(2e-3 * range);
    tf.dispose([w.data, p.data]);
  });

  it('--help documents the pipeline', async () => {
    const r = await regkit(['register', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('Pipeline');
    expect(r.stdout).toContain('affine, then velocity');
    expect(r.stdout).toContain('--transform rigid | affine');
    expect(r.stdout).toContain('--affine-out');
    expect(r.stdout).toContain('--no-affine');
    const a = await regkit(['apply', '--help']);
    expect(a.stdout).toContain('--affine <file>');
  });

  it('bad combinations are usage errors (exit 2) naming the flag', async () => {
    const base = ['register', '--fixed', 'fixed.nii', '--moving', 'moving.nii', '--out', 'o.nii'];
    const cases: [string[], RegExp][] = [
      [['--transform', 'rigid', '--regularisation', '1'], /--regularisation .*--transform rigid/],
      [['--transform', 'affine', '--no-affine'], /--no-affine .*--transform affine/],
      [['--transform', 'affine', '--affine', 'rigid'], /--affine .*--transform affine/],
      [['--transform', 'velocity', '--affine-out', 'a.txt'], /--affine-out needs an affine stage/],
      [['--no-affine', '--deformable-field', 'd.nii.gz'], /--deformable-field .*--no-affine/],
      [['--affine-out', 'a.nii'], /--affine-out a\.nii: .*\.txt/],
      [['--transform', 'bspline'], /--transform/],
      [['--affine', 'similarity'], /--affine/],
    ];
    for (const [extra, message] of cases) {
      const r = await regkit([...base, ...extra]);
      expect(r.code, extra.join(' ')).toBe(2);
      expect(r.stderr, extra.join(' ')).toMatch(message);
    }
    const noRef = await regkit([
      'apply',
      '--moving',
      'moving.nii',
      '--affine',
      'affine.txt',
      '--out',
      'x.nii',
    ]);
    expect(noRef.code).toBe(2);
    expect(noRef.stderr).toMatch(/--affine without --field needs --reference/);
    const none = await regkit(['apply', '--moving', 'moving.nii', '--out', 'x.nii']);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/--field .*--affine/);
  });
});
