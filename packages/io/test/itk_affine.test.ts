/**
 * ITK/ANTs affine transform files: a hand-computed case (voxel shift → LPS mm, centre),
 * text and MATLAB v4 layouts, round trips through files on oblique grids, clear errors, and
 * — when /usr/bin/transformix (elastix 5) is installed — transformix's own deformation
 * field and resampled image for the parameters we write, compared with regkit's voxel
 * affine applied by `resampleToReference`.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { initBackend, tf } from '@regkit/core';
import {
  decodeItkAffine,
  defaultHeader,
  encodeItkAffine,
  itkToVoxelAffine,
  RegkitIOError,
  readDisplacementField,
  readItkAffine,
  readNifti,
  resampleToReference,
  type Volume,
  voxelAffineToItk,
  writeItkAffine,
  writeNifti,
} from '@regkit/io';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectClose, makeAffine, tempDir } from './helpers.js';

const tmp = tempDir();
beforeAll(async () => {
  expect(await initBackend('cpu')).toBe('cpu');
});
afterAll(() => tmp.cleanup());

function grid(spatial: number[], affine: number[], data?: tf.Tensor): Volume {
  return {
    data: data ?? tf.zeros([1, ...spatial, 1]),
    affine,
    spacing: [0, 1, 2]
      .slice(0, spatial.length)
      .map((j) => Math.hypot(affine[j]!, affine[4 + j]!, affine[8 + j]!)),
    header: defaultHeader(spatial, 1),
  };
}

/** A rotation about z by `deg`, scaled per column, as a 3×3 (rows). */
function rotZ(deg: number, s: number[]): number[][] {
  const c = Math.cos((deg * Math.PI) / 180);
  const n = Math.sin((deg * Math.PI) / 180);
  return [
    [c * s[0]!, -n * s[1]!, 0],
    [n * s[0]!, c * s[1]!, 0],
    [0, 0, s[2]!],
  ];
}

/** Homogeneous RAS point of voxel x. */
function ras(affine: number[], x: number[]): number[] {
  return [0, 1, 2].map(
    (r) =>
      affine[r * 4]! * x[0]! +
      affine[r * 4 + 1]! * x[1]! +
      affine[r * 4 + 2]! * x[2]! +
      affine[r * 4 + 3]!,
  );
}

const voxelAffine = [
  [1.04, -0.12, 0.03, 1.5],
  [0.1, 0.97, -0.05, -2],
  [-0.02, 0.06, 1.02, 0.7],
];

describe('voxelAffineToItk: hand-computed', () => {
  it('a one-voxel shift along axis 0 of a 2×3×4 mm RAS grid is −2 mm along LPS x', () => {
    const a = makeAffine(
      [
        [2, 0, 0],
        [0, 3, 0],
        [0, 0, 4],
      ],
      [10, 20, 30],
    );
    const g = grid([5, 4, 3], a);
    const itk = voxelAffineToItk(
      [
        [1, 0, 0, 1],
        [0, 1, 0, 0],
        [0, 0, 1, 0],
      ],
      g,
      g,
    );
    expect(itk.dimension).toBe(3);
    expectClose(itk.matrix.flat(), [1, 0, 0, 0, 1, 0, 0, 0, 1], 1e-12, 1e-12);
    expectClose(itk.translation, [-2, 0, 0], 1e-12, 1e-12);
    // centre voxel (2, 1.5, 1) → RAS (14, 24.5, 34) → LPS (−14, −24.5, 34)
    expectClose(itk.center, [-14, -24.5, 34], 1e-12, 1e-12);
    const text = new TextDecoder().decode(encodeItkAffine(itk, 'txt'));
    expect(text).toBe(
      '#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform_double_3_3\nParameters: 1 0 0 0 1 0 0 0 1 -2 0 0\nFixedParameters: -14 -24.5 34\n',
    );
    tf.dispose(g.data);
  });

  it('maps fixed LPS points to moving LPS points (oblique, different grids)', () => {
    const fa = makeAffine(rotZ(20, [1.2, 1, 2]), [-30, 12, -8]);
    const ma = makeAffine(rotZ(-35, [0.8, 1.5, 1]), [25, -10, 4]);
    const f = grid([6, 7, 5], fa);
    const m = grid([9, 8, 6], ma);
    const itk = voxelAffineToItk(voxelAffine, f, m);
    for (const x of [
      [0, 0, 0],
      [5, 2, 4],
      [1.5, 6, 2],
    ]) {
      const y = voxelAffine.map((r) => r[0]! * x[0]! + r[1]! * x[1]! + r[2]! * x[2]! + r[3]!);
      const p = ras(fa, x);
      const q = ras(ma, y);
      const pl = [-p[0]!, -p[1]!, p[2]!];
      const ql = [-q[0]!, -q[1]!, q[2]!];
      const got = [0, 1, 2].map(
        (i) =>
          itk.matrix[i]!.reduce((s, v, k) => s + v * (pl[k]! - itk.center[k]!), 0) +
          itk.center[i]! +
          itk.translation[i]!,
      );
      expectClose(got, ql, 1e-10, 1e-9, `point ${x}`);
    }
    tf.dispose([f.data, m.data]);
  });
});

describe('writeItkAffine / readItkAffine round trips', () => {
  const fa = makeAffine(rotZ(20, [1.2, 1, 2]), [-30, 12, -8]);
  const ma = makeAffine(rotZ(-35, [0.8, 1.5, 1]), [25, -10, 4]);

  for (const ext of ['txt', 'tfm', 'mat']) {
    it(`3D .${ext}: the voxel affine comes back`, async () => {
      const f = grid([6, 7, 5], fa);
      const m = grid([9, 8, 6], ma);
      const path = join(tmp.dir, `a.${ext}`);
      const a = tf.tensor3d([voxelAffine]);
      const written = await writeItkAffine(path, a, f, m);
      const itk = await readItkAffine(path);
      expectClose(itk.matrix.flat(), written.matrix.flat(), 1e-14, 1e-14);
      expectClose(itk.translation, written.translation, 1e-14, 1e-14);
      expectClose(itk.center, written.center, 1e-14, 1e-14);
      const back = itkToVoxelAffine(itk, f, m);
      expect(back.shape).toEqual([1, 3, 4]);
      expectClose(await back.data(), voxelAffine.flat(), 1e-6, 1e-6);
      tf.dispose([f.data, m.data, a, back]);
    });
  }

  it('.mat is ANTs MATLAB v4: AffineTransform_double_3_3 (12×1) and fixed (3×1)', async () => {
    const f = grid([6, 7, 5], fa);
    const itk = voxelAffineToItk(voxelAffine, f, f);
    const bytes = encodeItkAffine(itk, 'mat');
    const v = new DataView(bytes.buffer);
    expect([0, 4, 8, 12, 16].map((o) => v.getInt32(o, true))).toEqual([0, 12, 1, 0, 27]);
    expect(new TextDecoder().decode(bytes.subarray(20, 46))).toBe('AffineTransform_double_3_3');
    expect(bytes[46]).toBe(0);
    expect(v.getFloat64(47, true)).toBe(itk.matrix[0]![0]);
    const o = 47 + 12 * 8;
    expect([0, 4, 8, 12, 16].map((k) => v.getInt32(o + k, true))).toEqual([0, 3, 1, 0, 6]);
    expect(new TextDecoder().decode(bytes.subarray(o + 20, o + 25))).toBe('fixed');
    expect(bytes.length).toBe(o + 26 + 24);
    expect(decodeItkAffine(bytes)).toEqual(itk);
    tf.dispose(f.data);
  });

  it('2D: ITK x, y = −RAS x, −y', async () => {
    const a2 = makeAffine(
      [
        [0.5, 0, 0],
        [0, 2, 0],
        [0, 0, 1],
      ],
      [3, -4, 0],
    );
    const f = grid([7, 6], a2);
    const itk = voxelAffineToItk(
      [
        [1, 0, 2],
        [0, 1, -1],
      ],
      f,
      f,
    );
    // (2, −1) voxels = (1, −2) mm RAS = (−1, 2) mm ITK
    expectClose(itk.translation, [-1, 2], 1e-12, 1e-12);
    expectClose(itk.center, [-(3 + 0.5 * 3), -(-4 + 2 * 2.5)], 1e-12, 1e-12);
    const path = join(tmp.dir, 'a2.txt');
    await writeItkAffine(
      path,
      [
        [1.1, 0.2, 2],
        [-0.1, 0.9, -1],
      ],
      f,
      f,
    );
    expect(readFileSync(path, 'utf8')).toContain('Transform: AffineTransform_double_2_2');
    const back = itkToVoxelAffine(await readItkAffine(path), f, f);
    expectClose(await back.data(), [1.1, 0.2, 2, -0.1, 0.9, -1], 1e-6, 1e-6);
    tf.dispose([f.data, back]);
  });

  it('reads ITK text written by others: float type, centre 0, composite wrapper', () => {
    const text = `#Insight Transform File V1.0
#Transform 0
Transform: CompositeTransform_double_3_3
#Transform 1
Transform: AffineTransform_float_3_3
Parameters: 1 0 0 0 1 0 0 0 1 5 6 7
FixedParameters: 0 0 0
`;
    const itk = decodeItkAffine(new TextEncoder().encode(text), 'x.txt');
    expect(itk.translation).toEqual([5, 6, 7]);
    expect(itk.center).toEqual([0, 0, 0]);
  });

  it('errors name the file and the problem', async () => {
    const f = grid([4, 4, 4], makeAffine(rotZ(0, [1, 1, 1]), [0, 0, 0]));
    const err = async (p: Promise<unknown>) => (await p.catch((e) => e)) as RegkitIOError;
    const e1 = await err(writeItkAffine(join(tmp.dir, 'a.nii'), voxelAffine, f, f));
    expect(e1).toBeInstanceOf(RegkitIOError);
    expect(e1.code).toBe('PATH');
    expect(e1.message).toMatch(/a\.nii: .*\.txt.*\.mat/);
    const e2 = await err(readItkAffine(join(tmp.dir, 'missing.txt')));
    expect(e2.code).toBe('NOTFOUND');
    const euler = join(tmp.dir, 'euler.txt');
    writeFileSync(
      euler,
      '#Insight Transform File V1.0\nTransform: Euler3DTransform_double_3_3\nParameters: 0 0 0 1 2 3\nFixedParameters: 0 0 0 0\n',
    );
    const e3 = await err(readItkAffine(euler));
    expect(e3.code).toBe('TRANSFORM');
    expect(e3.message).toMatch(/euler\.txt: transform type 'Euler3DTransform_double_3_3'/);
    const short = join(tmp.dir, 'short.txt');
    writeFileSync(short, 'Transform: AffineTransform_double_3_3\nParameters: 1 0 0\n');
    expect((await err(readItkAffine(short))).message).toMatch(/needs 12 finite Parameters, got 3/);
    const junk = join(tmp.dir, 'junk.mat');
    writeFileSync(junk, new Uint8Array([1, 2, 3]));
    expect((await err(readItkAffine(junk))).code).toBe('TRANSFORM');
    expect(() =>
      voxelAffineToItk(
        [
          [1, 0, 0],
          [0, 1, 0],
        ],
        f,
        f,
      ),
    ).toThrow(/affine is 2D but 'fixed' is 3D/);
    tf.dispose(f.data);
  });
});

const TRANSFORMIX = '/usr/bin/transformix';

describe.skipIf(!existsSync(TRANSFORMIX))('cross-check with elastix transformix', () => {
  // fixed grid in ITK terms (symmetric direction, so elastix's storage order does not matter):
  // spacing (2, 1.5, 3), origin (10, −20, 5) LPS → RAS affine [[0, 1.5, 0], [2, 0, 0], [0, 0, 3]], (−10, 20, 5)
  const fixedAffine = makeAffine(
    [
      [0, 1.5, 0],
      [2, 0, 0],
      [0, 0, 3],
    ],
    [-10, 20, 5],
  );
  const fixedSpatial = [10, 9, 8];
  const movingAffine = makeAffine(rotZ(25, [1.6, 1.4, 2.5]), [-8, -12, 2]);
  const movingSpatial = [14, 12, 10];
  const a = [
    [0.9, -0.2, 0.05, 2.5],
    [0.25, 1.05, 0.02, 1],
    [-0.03, 0.04, 0.95, 0.8],
  ];

  function run(name: string, itk: ReturnType<typeof voxelAffineToItk>, extra: string[]) {
    const dir = join(tmp.dir, name);
    execFileSync('mkdir', ['-p', dir]);
    const tp = join(dir, 'tp.txt');
    const p: Record<string, string | number[]> = {
      Transform: '"AffineTransform"',
      NumberOfParameters: [12],
      TransformParameters: [...itk.matrix.flat(), ...itk.translation],
      CenterOfRotationPoint: itk.center,
      InitialTransformParametersFileName: '"NoInitialTransform"',
      HowToCombineTransforms: '"Compose"',
      FixedImageDimension: [3],
      MovingImageDimension: [3],
      FixedInternalImagePixelType: '"float"',
      MovingInternalImagePixelType: '"float"',
      Size: fixedSpatial,
      Index: [0, 0, 0],
      Spacing: [2, 1.5, 3],
      Origin: [10, -20, 5],
      Direction: [0, -1, 0, -1, 0, 0, 0, 0, 1],
      UseDirectionCosines: '"true"',
      ResampleInterpolator: '"FinalBSplineInterpolator"',
      FinalBSplineInterpolationOrder: [1], // first-order B-spline = linear interpolation
      Resampler: '"DefaultResampler"',
      DefaultPixelValue: [0],
      ResultImageFormat: '"nii.gz"',
      ResultImagePixelType: '"float"',
      CompressResultImage: '"false"',
    };
    writeFileSync(
      tp,
      Object.entries(p)
        .map(([k, v]) => `(${k} ${Array.isArray(v) ? v.join(' ') : v})`)
        .join('\n'),
    );
    execFileSync(TRANSFORMIX, [...extra, '-tp', tp, '-out', dir], {
      stdio: 'ignore',
      timeout: 60_000,
    });
    return dir;
  }

  it('transformix -def all of our parameters = A_f⁻¹ A_m a(x) at every fixed voxel', async () => {
    const f = grid(fixedSpatial, fixedAffine);
    const m = grid(movingSpatial, movingAffine);
    const itk = voxelAffineToItk(a, f, m);
    const dir = run('def', itk, ['-def', 'all']);
    const u = await readDisplacementField(join(dir, 'deformationField.nii.gz'), f);
    const got = await u.data();
    const fInv = (() => {
      // inverse of the fixed affine's linear part is a permutation with scales
      return (q: number[]) => {
        const d = [q[0]! + 10, q[1]! - 20, q[2]! - 5];
        return [d[1]! / 2, d[0]! / 1.5, d[2]! / 3];
      };
    })();
    let n = 0;
    for (let i = 0; i < fixedSpatial[0]!; i++)
      for (let j = 0; j < fixedSpatial[1]!; j++)
        for (let k = 0; k < fixedSpatial[2]!; k++) {
          const x = [i, j, k];
          const y = a.map((r) => r[0]! * i + r[1]! * j + r[2]! * k + r[3]!);
          const want = fInv(ras(movingAffine, y)).map((v, d) => v - x[d]!);
          expectClose(got.slice(n, n + 3), want, 1e-4, 2e-4, `voxel ${x}`);
          n += 3;
        }
    tf.dispose([f.data, m.data, u]);
  });

  it('transformix resampling of a moving image = regkit resampling with the voxel affine', async () => {
    const movingData = tf.tidy(() => {
      const i = tf.reshape(tf.range(0, movingSpatial[0]!), [1, movingSpatial[0]!, 1, 1, 1]);
      const j = tf.reshape(tf.range(0, movingSpatial[1]!), [1, 1, movingSpatial[1]!, 1, 1]);
      const k = tf.reshape(tf.range(0, movingSpatial[2]!), [1, 1, 1, movingSpatial[2]!, 1]);
      return tf.add(
        tf.add(tf.mul(tf.sin(tf.mul(i, 0.5)), 10), tf.mul(tf.cos(tf.mul(j, 0.4)), 7)),
        tf.mul(k, 1.5),
      );
    });
    const m = grid(movingSpatial, movingAffine, movingData);
    const f = grid(fixedSpatial, fixedAffine);
    const movingPath = join(tmp.dir, 'moving.nii');
    await writeNifti(movingPath, m);
    const itk = voxelAffineToItk(a, f, m);
    const dir = run('res', itk, ['-in', movingPath]);
    const theirs = await readNifti(join(dir, 'result.nii.gz'));
    expect(theirs.data.shape).toEqual([1, ...fixedSpatial, 1]);
    expectClose(theirs.affine, fixedAffine, 1e-5, 1e-4, 'result grid');
    // regkit: reference voxel x samples the moving image at voxel a(x)
    const back = itkToVoxelAffine(itk, f, m);
    const aField = tf.tidy(() => {
      // x + u(x) = A_f⁻¹ A_m a(x): the field resampleToReference adds before its affine map
      const out: number[] = [];
      for (let i = 0; i < fixedSpatial[0]!; i++)
        for (let j = 0; j < fixedSpatial[1]!; j++)
          for (let k = 0; k < fixedSpatial[2]!; k++) {
            const y = a.map((r) => r[0]! * i + r[1]! * j + r[2]! * k + r[3]!);
            const q = ras(movingAffine, y);
            const d = [q[0]! + 10, q[1]! - 20, q[2]! - 5];
            out.push(d[1]! / 2 - i, d[0]! / 1.5 - j, d[2]! / 3 - k);
          }
      return tf.tensor(out, [1, ...fixedSpatial, 3]);
    });
    const ours = resampleToReference(m, f, { field: aField, defaultValue: 0 });
    const t = await theirs.data.data();
    const o = await ours.data.data();
    // compare where the sample point is inside the moving grid by a voxel (no border blending)
    let compared = 0;
    let maxErr = 0;
    let n = 0;
    for (let i = 0; i < fixedSpatial[0]!; i++)
      for (let j = 0; j < fixedSpatial[1]!; j++)
        for (let k = 0; k < fixedSpatial[2]!; k++, n++) {
          const y = a.map((r) => r[0]! * i + r[1]! * j + r[2]! * k + r[3]!);
          if (!y.every((v, d) => v > 1 && v < movingSpatial[d]! - 2)) continue;
          compared++;
          maxErr = Math.max(maxErr, Math.abs(t[n]! - o[n]!));
        }
    expect(compared).toBeGreaterThan(100);
    expect(maxErr).toBeLessThan(1e-3);
    // and the voxel affine read back is a
    expectClose(await back.data(), a.flat(), 1e-6, 1e-5);
    tf.dispose([movingData, f.data, theirs.data, back, aField, ours.data]);
  });
});
