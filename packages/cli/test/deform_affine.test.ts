/**
 * `regkit deform --rotate --scale --translate`: the linear misalignment after the smooth
 * field, against a closed form (a 90° rotation about the grid centre of the 2D T1 slice moves
 * voxel values exactly), the affine reported in --json, and the usage errors.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const here = fileURLToPath(new URL('.', import.meta.url));
const bin = resolve(here, '..', 'dist', 'bin.js');
const t1 = resolve(here, '..', 'data', 'itk_brainweb_t1_slice.nii.gz');

function regkit(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(process.execPath, [bin, ...args], { maxBuffer: 1 << 24 }, (err, stdout, stderr) => {
      const code = err ? ((err as { code?: number }).code ?? 1) : 0;
      done({ code: typeof code === 'number' ? code : 1, stdout, stderr });
    });
  });
}

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'regkit-deform-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('regkit deform with a linear misalignment', () => {
  it('a 90° rotation about the grid centre (no smooth field) moves voxel values to R (x − c) + c', async () => {
    const out = join(dir, 'rot.nii.gz');
    const r = await regkit([
      'deform',
      '--image',
      t1,
      '--out',
      out,
      '--true-field',
      join(dir, 'rot_field.nii.gz'),
      '--max-displacement',
      '0',
      '--rotate',
      '90',
      '--backend',
      'cpu',
      '--json',
    ]);
    expect(r.code, r.stderr).toBe(0);
    const summary = JSON.parse(r.stdout) as { affine: { matrix: number[][]; offset: number[] } };
    const m = summary.affine.matrix;
    expect(m[0]![0]).toBeCloseTo(0, 12);
    expect(m[0]![1]).toBeCloseTo(-1, 12);
    expect(m[1]![0]).toBeCloseTo(1, 12);
    expect(m[1]![1]).toBeCloseTo(0, 12);
    const { initBackend } = await import('@regkit/core');
    const { readNifti } = await import('@regkit/io');
    await initBackend('cpu');
    const src = await readNifti(t1);
    const dst = await readNifti(out);
    const [, H, W] = src.data.shape as number[];
    expect(dst.data.shape).toEqual(src.data.shape);
    const a = src.data.dataSync();
    const b = dst.data.dataSync();
    // the slice is read as 2D [181, 217], centre (90, 108): out[i, j] = image[198 − j, i + 18]
    let checked = 0;
    let worst = 0;
    for (let i = 0; i < H!; i++) {
      for (let j = 0; j < W!; j++) {
        const si = 198 - j;
        const sj = i + 18;
        if (si < 0 || si >= H! || sj < 0 || sj >= W!) continue;
        worst = Math.max(worst, Math.abs(b[i * W! + j]! - a[si * W! + sj]!));
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(20000);
    expect(worst).toBeLessThanOrEqual(1e-3);
  });

  it('scale and translation compose as M (x − c) + c + t', async () => {
    const r = await regkit([
      'deform',
      '--image',
      t1,
      '--out',
      join(dir, 'st.nii.gz'),
      '--true-field',
      join(dir, 'st_field.nii.gz'),
      '--rotate',
      '0',
      '--scale',
      '1.1',
      '--translate',
      '5,-3',
      '--backend',
      'cpu',
      '--json',
    ]);
    expect(r.code, r.stderr).toBe(0);
    const { affine } = JSON.parse(r.stdout) as { affine: { matrix: number[][]; offset: number[] } };
    expect(affine.matrix[0]![0]).toBeCloseTo(1.1, 12);
    // offset = c + t − M c: 90 + 5 − 99 and 108 − 3 − 118.8
    expect(affine.offset[0]).toBeCloseTo(-4, 10);
    expect(affine.offset[1]).toBeCloseTo(-13.8, 10);
  });

  it('refuses a wrong number of angles or a non-positive scale (exit 2, nothing written)', async () => {
    const base = ['deform', '--image', t1, '--true-field', join(dir, 'bad_field.nii.gz')];
    const angles = await regkit([...base, '--out', join(dir, 'bad1.nii.gz'), '--rotate', '10,5']);
    expect(angles.code).toBe(2);
    expect(angles.stderr).toMatch(/--rotate needs 1 value\(s\) for a 2D image, got 2/);
    const scale = await regkit([...base, '--out', join(dir, 'bad2.nii.gz'), '--scale', '0']);
    expect(scale.code).toBe(2);
    expect(scale.stderr).toMatch(/--scale must be > 0/);
  });
});
