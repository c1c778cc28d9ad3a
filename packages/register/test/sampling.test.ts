import { initBackend, mulberry32, randomSmoothField, tf, warp } from '@regkit/core';
import * as kernels from '@regkit/kernels';
import { mindSsc } from '@regkit/losses';
import {
  affineDisplacement,
  PointImage,
  pickVoxels,
  registerAffine,
  registerImages,
  sampleVoxels,
  warpAtVoxels,
} from '@regkit/register';
import { beforeAll, describe, expect, it } from 'vitest';

/** Max |a − b| of two tensors. */
async function maxDiff(a: tf.Tensor, b: tf.Tensor): Promise<number> {
  const d = tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))));
  const v = (await d.data())[0]!;
  d.dispose();
  return v;
}

/** A textured synthetic 3D image: seeded Gaussian blobs. */
function blobs(shape: readonly number[], count: number, seed: number): tf.Tensor {
  const rand = mulberry32(seed);
  const centres = Array.from({ length: count }, () => [
    ...shape.map((s) => 3 + rand() * (s - 6)),
    0.2 + rand(),
    1.5 + 2 * rand(),
  ]);
  const n = shape.reduce((a, b) => a * b, 1);
  const v = new Float32Array(n);
  const idx = [0, 0, 0];
  for (let p = 0; p < n; p++) {
    let s = 0;
    for (const c of centres) {
      const d2 = (idx[0]! - c[0]!) ** 2 + (idx[1]! - c[1]!) ** 2 + (idx[2]! - c[2]!) ** 2;
      s += c[3]! * Math.exp(-d2 / (2 * c[4]! ** 2));
    }
    v[p] = s;
    for (let a = 2; a >= 0; a--) {
      if (++idx[a]! < shape[a]!) break;
      idx[a] = 0;
    }
  }
  return tf.tidy(() => {
    const t = tf.tensor(v, [1, ...shape, 1]);
    return tf.div(t, tf.max(t));
  });
}

/**
 * `warp` evaluated at `points` `[N, nd]` (the reference: the points laid out as an
 * `[1, N, 1(, 1)]` field grid, whose position is (i, 0(, 0))), `[N, C]`.
 */
function warpAtPoints(image: tf.Tensor, points: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const [n, nd] = points.shape as [number, number];
    const grid = tf.concat(
      [tf.reshape(tf.range(0, n, 1, 'float32'), [n, 1]), tf.zeros([n, nd - 1])],
      1,
    );
    const field = tf.reshape(tf.sub(points, grid), [1, n, ...new Array(nd - 1).fill(1), nd]);
    return tf.reshape(warp(image, field), [n, -1]);
  });
}

for (const backend of ['cpu', 'wasm'] as const) {
  describe(`voxel sampling (${backend})`, () => {
    beforeAll(async () => {
      await initBackend(backend, { kernels });
    });

    for (const shape of [
      [7, 8, 9],
      [11, 13],
    ]) {
      it(`PointImage.at equals warp in ${shape.length}D, inside and outside the grid (values, gradient)`, async () => {
        const nd = shape.length;
        const image = tf.randomUniform([1, ...shape, 2], 0, 1, 'float32', 3);
        const rand = mulberry32(11);
        const n = 300;
        // points in [−1.5, S + 0.5): some outside, some straddling the border
        const p = Float32Array.from({ length: n * nd }, (_, i) => {
          const s = shape[i % nd]!;
          return -1.5 + rand() * (s + 2);
        });
        const points = tf.tensor2d(p, [n, nd]);
        const weights = tf.randomNormal([n, 2], 0, 1, 'float32', 5);
        const at = new PointImage(image);
        const got = at.at(points);
        const want = warpAtPoints(image, points);
        expect(got.shape).toEqual([n, 2]);
        // (1e-4: the reference's field x − (i, 0(, 0)) loses float32 bits for i up to 300)
        expect(await maxDiff(got, want)).toBeLessThan(1e-4);
        const gGot = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(at.at(x), weights)))(points);
        const gWant = tf.grad((x: tf.Tensor) => tf.sum(tf.mul(warpAtPoints(image, x), weights)))(
          points,
        );
        expect(await maxDiff(gGot, gWant)).toBeLessThan(1e-4);
        // the values at voxel indices, without interpolation
        const vals = at.values([0, 5, 17]);
        const flat = tf.reshape(image, [-1, 2]);
        const ref = tf.gather(flat, tf.tensor1d([0, 5, 17], 'int32'));
        expect(await maxDiff(vals, ref)).toBe(0);
        tf.dispose([image, points, weights, got, want, gGot, gWant, vals, flat, ref]);
      });
    }

    it('warpAtVoxels equals pickVoxels(warp(m, d), sample): values and gradient in d', async () => {
      const shape = [10, 12, 11];
      const voxels = shape.reduce((a, b) => a * b, 1);
      const moving = tf.randomUniform([1, ...shape, 3], 0, 1, 'float32', 7);
      const d = tf.randomNormal([1, ...shape, 3], 0, 2, 'float32', 8);
      const sample = sampleVoxels(voxels, 300, 5)!;
      const weights = tf.randomNormal([1, 300, 1, 3], 0, 1, 'float32', 9);
      const mPoints = new PointImage(moving);
      const got = warpAtVoxels(mPoints, d, sample);
      const want = pickVoxels(warp(moving, d), sample);
      expect(got.shape).toEqual([1, 300, 1, 3]);
      expect(await maxDiff(got, want)).toBeLessThan(1e-5);
      const gGot = tf.grad((x: tf.Tensor) =>
        tf.sum(tf.mul(warpAtVoxels(mPoints, x, sample), weights)),
      )(d);
      const gWant = tf.grad((x: tf.Tensor) =>
        tf.sum(tf.mul(pickVoxels(warp(moving, x), sample), weights)),
      )(d);
      expect(await maxDiff(gGot, gWant)).toBeLessThan(1e-4);
      tf.dispose([moving, d, sample, weights, got, want, gGot, gWant]);
    });

    it('sampleVoxels is seeded: equal seeds give equal samples, other seeds other ones', async () => {
      const a = sampleVoxels(100000, 512, 3)!;
      const b = sampleVoxels(100000, 512, 3)!;
      const c = sampleVoxels(100000, 512, 4)!;
      expect(Array.from(await a.data())).toEqual(Array.from(await b.data()));
      expect(Array.from(await a.data())).not.toEqual(Array.from(await c.data()));
      const all = Array.from(await a.data());
      expect(Math.min(...all)).toBeGreaterThanOrEqual(0);
      expect(Math.max(...all)).toBeLessThan(100000);
      expect(sampleVoxels(500, 512, 3)).toBeNull();
      tf.dispose([a, b, c]);
    });

    describe('registerImages with sampled similarities', () => {
      const shape = [20, 24, 20];
      let moving: tf.Tensor;
      let fixed: tf.Tensor;
      beforeAll(() => {
        moving = blobs(shape, 40, 2);
        const u = randomSmoothField(shape, { maxDisplacement: 2, controlSpacing: 8, seed: 4 });
        fixed = tf.tidy(() => {
          const w = warp(moving, u);
          return tf.add(tf.sin(tf.mul(w, 4)), tf.mul(w, 0.5)); // non-monotone second contrast
        });
        u.dispose();
      });

      for (const similarity of ['mi', 'mind'] as const) {
        it(`${similarity}: reproducible from the seed, another seed gives another result`, async () => {
          const run = async (seed: number) => {
            const r = await registerImages(fixed, moving, {
              similarity,
              affine: false,
              iterations: [4, 4, 3],
              samples: 512,
              seed,
            });
            const v = Array.from((await r.forward.data()) as Float32Array);
            tf.dispose([r.forward, r.velocity!]);
            return v;
          };
          const a = await run(1);
          const b = await run(1);
          const c = await run(2);
          expect(a).toEqual(b);
          expect(c).not.toEqual(a);
          expect(a.some((x) => x !== 0)).toBe(true);
        });
      }

      it('the affine stage on the shared pyramid equals registerAffine with the same options', async () => {
        const before = tf.memory().numTensors;
        for (const similarity of ['mi', 'mind'] as const) {
          const options = { similarity, iterations: [20, 10, 0], seed: 3 } as const;
          const alone = await registerAffine(fixed, moving, options);
          const r = await registerImages(fixed, moving, {
            similarity,
            affineOptions: { iterations: [20, 10, 0] },
            iterations: [1, 0, 0],
            seed: 3,
          });
          expect(await maxDiff(r.affine!, alone.affine)).toBeLessThan(1e-6);
          tf.dispose([alone.affine, alone.forward, r.affine!, r.forward, r.velocity!]);
        }
        // the shared pyramid and MIND features are all freed
        expect(tf.memory().numTensors).toBe(before);
      });
    });

    it('registerAffine with mind on sampled points equals the dense MIND features path', async () => {
      // samples ≥ voxels: the sampled path visits every voxel once, so it must give the
      // affine of the dense path (MIND features warped whole, mean squared difference)
      const shape = [16, 20, 16];
      const moving = blobs(shape, 30, 1);
      const a = 0.12;
      const rot = [
        [1.04 * Math.cos(a), -Math.sin(a), 0],
        [Math.sin(a), Math.cos(a), 0],
        [0, 0, 1],
      ];
      const ctr = shape.map((n) => (n - 1) / 2);
      const tc = [2, -1, 1];
      const truthM = tf.tensor3d([
        rot.map((row, i) => [
          ...row,
          tc[i]! + ctr[i]! - row.reduce((acc, v, j) => acc + v * ctr[j]!, 0),
        ]),
      ]);
      const truth = affineDisplacement(truthM, shape);
      const fixed3 = tf.tidy(() => {
        const w = warp(moving, truth);
        return tf.add(tf.sin(tf.mul(w, 5)), tf.mul(w, 0.5));
      });
      const common = { iterations: [15, 10, 5], init: 'identity' } as const;
      const sampled = await registerAffine(fixed3, moving, {
        ...common,
        similarity: 'mind',
        samples: 1e9,
      });
      const dense = await registerAffine(fixed3, moving, {
        ...common,
        similarity: 'mse',
        features: { apply: (x: tf.Tensor) => mindSsc(x) },
      });
      expect(await maxDiff(sampled.affine, dense.affine)).toBeLessThan(1e-3);
      // and it moved: the affine is no longer the identity
      const eye = tf.tensor3d([
        [
          [1, 0, 0, 0],
          [0, 1, 0, 0],
          [0, 0, 1, 0],
        ],
      ]);
      expect(await maxDiff(sampled.affine, eye)).toBeGreaterThan(0.1);
      tf.dispose([moving, truthM, truth, fixed3, eye]);
      tf.dispose([sampled.affine, sampled.forward, dense.affine, dense.forward]);
    });
  });
}
