import {
  composeFields,
  initBackend,
  integrateVelocity,
  mulberry32,
  randomSmoothField,
  tf,
  warp,
} from '@regkit/core';
import * as kernels from '@regkit/kernels';
import { affineDisplacement, invertAffine, registerAffine, registerImages } from '@regkit/register';
import { beforeAll, describe, expect, it } from 'vitest';

/** A textured synthetic image: seeded Gaussian blobs kept 4 voxels off the border. */
function blobs(shape: readonly number[], count: number, seed = 1): tf.Tensor {
  const rand = mulberry32(seed);
  const nd = shape.length;
  const centres = Array.from({ length: count }, () => [
    ...shape.map((s) => 4 + rand() * (s - 8)),
    0.2 + rand(),
    1.5 + 2.5 * rand(),
  ]);
  const n = shape.reduce((a, b) => a * b, 1);
  const v = new Float32Array(n);
  const idx = new Array<number>(nd).fill(0);
  for (let p = 0; p < n; p++) {
    let s = 0;
    for (const c of centres) {
      let d2 = 0;
      for (let k = 0; k < nd; k++) d2 += (idx[k]! - c[k]!) ** 2;
      s += c[nd]! * Math.exp(-d2 / (2 * c[nd + 1]! ** 2));
    }
    v[p] = s;
    for (let a = nd - 1; a >= 0; a--) {
      if (++idx[a]! < shape[a]!) break;
      idx[a] = 0;
    }
  }
  return tf.tensor(v, [1, ...shape, 1]);
}

/** Rotation by `deg` degrees about `axis` (Rodrigues), as rows. */
function rotation(axis: number[], deg: number): number[][] {
  const a = (deg * Math.PI) / 180;
  const [c, s] = [Math.cos(a), Math.sin(a)];
  const n = Math.hypot(...axis);
  const [x, y, z] = axis.map((v) => v / n) as [number, number, number];
  return [
    [c + x * x * (1 - c), x * y * (1 - c) - z * s, x * z * (1 - c) + y * s],
    [y * x * (1 - c) + z * s, c + y * y * (1 - c), y * z * (1 - c) - x * s],
    [z * x * (1 - c) - y * s, z * y * (1 - c) + x * s, c + z * z * (1 - c)],
  ];
}

/**
 * The output-convention affine [A | t] (x ↦ A x + t) of a matrix A acting about the grid
 * centre c followed by a translation tc: A (x − c) + c + tc.
 */
function aboutCentre(a: number[][], tc: number[], shape: readonly number[]): tf.Tensor {
  const c = shape.map((s) => (s - 1) / 2);
  return tf.tensor3d([
    a.map((row, i) => [...row, tc[i]! + c[i]! - row.reduce((acc, v, j) => acc + v * c[j]!, 0)]),
  ]);
}

/** RMS of |u − v| over the grid less `margin` voxels on each side. */
async function rmsError(u: tf.Tensor, v: tf.Tensor, margin = 4): Promise<number> {
  const nd = u.rank - 2;
  const shape = u.shape.slice(1, -1);
  const e = tf.tidy(() => {
    const d = tf.slice(
      tf.sub(u, v),
      [0, ...new Array<number>(nd).fill(margin), 0],
      [1, ...shape.map((s) => s - 2 * margin), nd],
    );
    return tf.sqrt(tf.mean(tf.sum(tf.square(d), -1)));
  });
  const r = (await e.data())[0]!;
  e.dispose();
  return r;
}

const S3 = [40, 48, 40];

for (const backend of ['cpu', 'wasm'] as const) {
  describe(`registerAffine (${backend})`, () => {
    let moving3: tf.Tensor;
    beforeAll(async () => {
      await initBackend(backend, { kernels });
      moving3 = blobs(S3, 90, 1);
    });

    // 12° about a skew axis, scales 1.08 / 0.95 / 1.05, translation (5, −4, 3) voxels
    const scale = [1.08, 0.95, 1.05];
    const a3 = rotation([0.3, 1, 0.5], 12).map((row) => row.map((v, j) => v * scale[j]!));

    it('recovers a known 3D affine with mse (< 0.5 voxel RMS) and inverts it', async () => {
      const truthM = aboutCentre(a3, [5, -4, 3], S3);
      const truth = affineDisplacement(truthM, S3);
      const fixed = warp(moving3, truth);
      const before = await rmsError(truth, tf.zerosLike(truth));
      const { affine, forward, inverse, levels } = await registerAffine(fixed, moving3, {
        similarity: 'mse',
        inverse: true,
      });
      expect(before).toBeGreaterThan(5);
      expect(levels).toHaveLength(3);
      expect(affine.shape).toEqual([1, 3, 4]);
      expect(await rmsError(forward, truth)).toBeLessThan(0.5);
      // the matrix itself against the known one (independent of affineField)
      const got = (await affine.array()) as number[][][];
      const want = (await truthM.array()) as number[][][];
      for (let i = 0; i < 3; i++) {
        for (let j = 0; j < 3; j++)
          expect(Math.abs(got[0]![i]![j]! - want[0]![i]![j]!)).toBeLessThan(0.01);
        expect(Math.abs(got[0]![i]![3]! - want[0]![i]![3]!)).toBeLessThan(0.5);
      }
      // inverse ∘ forward = identity (composeFields(forward, inverse) = 0)
      const c = composeFields(forward, inverse!);
      expect(await rmsError(c, tf.zerosLike(c), 8)).toBeLessThan(0.02);
      tf.dispose([truthM, truth, fixed, affine, forward, inverse!, c]);
    });

    it('recovers it with mi in a non-monotone second contrast', async () => {
      const truthM = aboutCentre(a3, [5, -4, 3], S3);
      const truth = affineDisplacement(truthM, S3);
      const fixed = tf.tidy(() => {
        const f = tf.div(warp(moving3, truth), tf.max(moving3));
        return tf.add(tf.sin(tf.mul(f, 5)), tf.mul(f, 0.5)); // non-monotone remap
      });
      const { affine, forward } = await registerAffine(fixed, moving3, {
        similarity: 'mi',
        samples: 2048,
        iterations: [100, 60, 40],
      });
      expect(await rmsError(forward, truth)).toBeLessThan(0.5);
      tf.dispose([truthM, truth, fixed, affine, forward]);
    });

    it('recovers a rigid motion with the rigid model (ncc)', async () => {
      const truthM = aboutCentre(rotation([1, -0.4, 0.2], 15), [-5, 3, 4], S3);
      const truth = affineDisplacement(truthM, S3);
      const fixed = warp(moving3, truth);
      const { affine, forward } = await registerAffine(fixed, moving3, {
        transform: 'rigid',
        similarity: 'ncc',
      });
      expect(await rmsError(forward, truth)).toBeLessThan(0.5);
      // A stays a rotation: AᵀA = I
      const ata = tf.tidy(() => {
        const a = tf.reshape(tf.slice(affine, [0, 0, 0], [1, 3, 3]), [3, 3]);
        return tf.max(tf.abs(tf.sub(tf.matMul(a, a, true), tf.eye(3))));
      });
      expect((await ata.data())[0]!).toBeLessThan(1e-4);
      tf.dispose([truthM, truth, fixed, affine, forward, ata]);
    });

    it('recovers a 2D affine (rotation 12°, scale 8 %, translation 6) with mse and rigid', async () => {
      const shape = [64, 72];
      const moving = blobs(shape, 70, 3);
      const [c, s] = [Math.cos(0.21), Math.sin(0.21)];
      const truthM = aboutCentre(
        [
          [1.08 * c, -s],
          [1.08 * s, c],
        ],
        [6, -3],
        shape,
      );
      const truth = affineDisplacement(truthM, shape);
      const fixed = warp(moving, truth);
      const { affine, forward } = await registerAffine(fixed, moving, { similarity: 'mse' });
      expect(await rmsError(forward, truth)).toBeLessThan(0.5);
      const rigidM = aboutCentre(
        [
          [c, -s],
          [s, c],
        ],
        [6, -3],
        shape,
      );
      const rigidTruth = affineDisplacement(rigidM, shape);
      const fixedR = warp(moving, rigidTruth);
      const rigid = await registerAffine(fixedR, moving, { transform: 'rigid', similarity: 'mse' });
      expect(await rmsError(rigid.forward, rigidTruth)).toBeLessThan(0.5);
      tf.dispose([moving, truthM, truth, fixed, affine, forward, rigidM, rigidTruth, fixedR]);
      tf.dispose([rigid.affine, rigid.forward]);
    });

    it('stays near the identity on aligned images (identity init), memory flat', async () => {
      const image = blobs([48, 56], 60, 5);
      const before = tf.memory().numTensors;
      const { affine, forward, inverse } = await registerAffine(image, image, {
        init: 'identity',
        inverse: true,
      });
      const zero = tf.zerosLike(forward);
      expect(await rmsError(forward, zero, 0)).toBeLessThan(0.1);
      tf.dispose([affine, forward, inverse!, zero]);
      expect(tf.memory().numTensors).toBe(before);
      image.dispose();
    });

    it('the affine + deformable pipeline beats deformable only, and composes exactly', async () => {
      const shape = [64, 64];
      const moving = blobs(shape, 70, 7);
      const [c, s] = [Math.cos(0.26), Math.sin(0.26)];
      const truthA = aboutCentre(
        [
          [1.1 * c, -s],
          [1.1 * s, 0.95 * c],
        ],
        [7, -6],
        shape,
      );
      const smooth = randomSmoothField(shape, { maxDisplacement: 2, controlSpacing: 16, seed: 3 });
      const truth = composeFields(affineDisplacement(truthA, shape), smooth);
      const fixed = warp(moving, truth);
      const deformableOnly = await registerImages(fixed, moving, { affine: false });
      const both = await registerImages(fixed, moving, { inverse: true });
      const errOnly = await rmsError(deformableOnly.forward, truth, 8);
      const errBoth = await rmsError(both.forward, truth, 8);
      console.log(`${backend}: deformable only ${errOnly}, affine + deformable ${errBoth}`);
      expect(errBoth).toBeLessThan(0.75 * errOnly);
      expect(errBoth).toBeLessThan(1);
      // forward = composeFields(affine − id, u) with u the deformable part
      const u = integrateVelocity(both.velocity!);
      const aff = affineDisplacement(both.affine!, shape);
      const composed = composeFields(aff, u);
      expect(await rmsError(both.forward, composed, 8)).toBeLessThan(0.02);
      // inverse ∘ forward ≈ identity
      const id = composeFields(both.forward, both.inverse!);
      expect(await rmsError(id, tf.zerosLike(id), 12)).toBeLessThan(0.15);
      // a given affine tensor is used as it is
      const given = await registerImages(fixed, moving, { affine: truthA, iterations: [0, 0, 0] });
      expect(await rmsError(given.forward, affineDisplacement(truthA, shape), 0)).toBeLessThan(
        1e-3,
      );
      tf.dispose([moving, truthA, smooth, truth, fixed, u, aff, composed, id]);
      tf.dispose([deformableOnly.forward, deformableOnly.velocity!]);
      tf.dispose([both.forward, both.velocity!, both.inverse!, both.affine!]);
      tf.dispose([given.forward, given.velocity!, given.affine!]);
    });

    it('inverts affines exactly and throws clear errors for bad options', async () => {
      const m = tf.tensor3d([
        [
          [1.1, 0.2, 3],
          [-0.1, 0.9, -2],
        ],
      ]);
      const inv = invertAffine(m);
      const back = invertAffine(inv);
      expect(Array.from(await back.data())).toEqual(
        Array.from(await m.data()).map((v) => expect.closeTo(v, 5)),
      );
      const img = tf.zeros([1, 16, 16, 1]);
      const bad = (o: object) => registerAffine(img, img, o as never);
      await expect(bad({ transform: 'similarity' })).rejects.toThrow(
        /'transform' must be rigid or affine/,
      );
      await expect(bad({ similarity: 'nmi' })).rejects.toThrow(
        /'similarity' must be lncc, ncc, mi/,
      );
      await expect(bad({ init: 'pca' })).rejects.toThrow(
        /'init' must be moments, centres, identity/,
      );
      await expect(bad({ init: tf.eye(2) })).rejects.toThrow(/'init' must be a \[1, 2, 3\] affine/);
      await expect(bad({ iterations: [1] })).rejects.toThrow(/'iterations' must list 3/);
      await expect(bad({ learningRate: -1 })).rejects.toThrow(/'learningRate' must be a finite/);
      await expect(bad({ samples: 10 })).rejects.toThrow(/'samples' must be an integer ≥ 64/);
      await expect(registerAffine(img, tf.zeros([1, 16, 17, 1]))).rejects.toThrow(/registerAffine/);
      await expect(registerImages(img, img, { affine: 'shear' as never })).rejects.toThrow(
        /'affine' must be 'affine', 'rigid', false or a \[1, 2, 3\] tensor/,
      );
      expect(() => invertAffine(tf.zeros([1, 2, 3]))).toThrow(/singular/);
      tf.dispose([m, inv, back, img]);
    });
  });
}
