import {
  composeFields,
  type FeatureExtractor,
  initBackend,
  mulberry32,
  randomSmoothField,
  tf,
  warp,
} from '@regkit/core';
import * as kernels from '@regkit/kernels';
import { mindSsc } from '@regkit/losses';
import { normalizeIntensity, registerImages } from '@regkit/register';
import { beforeAll, describe, expect, it } from 'vitest';

/** A textured synthetic 2D image: 60 seeded Gaussian blobs of random size and brightness. */
function blobs(h: number, w: number, seed = 1): tf.Tensor {
  const rand = mulberry32(seed);
  const centres = Array.from({ length: 60 }, () => [
    rand() * h,
    rand() * w,
    0.2 + rand(),
    1.5 + 3 * rand(),
  ]);
  const v = new Float32Array(h * w);
  for (let i = 0; i < h; i++) {
    for (let j = 0; j < w; j++) {
      let s = 0;
      for (const [ci, cj, a, r] of centres) {
        s += a! * Math.exp(-((i - ci!) ** 2 + (j - cj!) ** 2) / (2 * r! * r!));
      }
      v[i * w + j] = s;
    }
  }
  return tf.tensor(v, [1, h, w, 1]);
}

async function meanNorm(u: tf.Tensor): Promise<number> {
  const t = tf.tidy(() => tf.mean(tf.sqrt(tf.sum(tf.square(u), -1))));
  const v = (await t.data())[0]!;
  t.dispose();
  return v;
}

for (const backend of ['cpu', 'wasm'] as const) {
  describe(`registerImages (${backend})`, () => {
    beforeAll(async () => {
      await initBackend(backend, { kernels });
    });

    it('recovers a known smooth deformation (lncc, velocity) without folding', async () => {
      const moving = blobs(48, 56);
      const truth = randomSmoothField([48, 56], {
        maxDisplacement: 3,
        controlSpacing: 16,
        seed: 4,
      });
      const fixed = warp(moving, truth);
      const before = await meanNorm(truth);
      const {
        forward: field,
        velocity,
        levels,
      } = await registerImages(fixed, moving, {
        similarity: 'lncc',
        iterations: [60, 60, 60],
      });
      velocity!.dispose();
      const err = tf.sub(field, truth);
      const after = await meanNorm(err);
      expect(levels).toHaveLength(3);
      expect(levels[2]!.shape).toEqual([48, 56]);
      expect(after).toBeLessThan(0.35 * before);
      tf.dispose([moving, truth, fixed, field, err]);
    });

    it('recovers it with mse and a displacement model too', async () => {
      const moving = blobs(40, 40);
      const truth = randomSmoothField([40, 40], {
        maxDisplacement: 2.5,
        controlSpacing: 16,
        seed: 9,
      });
      const fixed = warp(moving, truth);
      const { forward: field } = await registerImages(fixed, moving, {
        similarity: 'mse',
        transform: 'displacement',
        iterations: [60, 60, 60],
        regularisationWeight: 0.05,
      });
      const err = tf.sub(field, truth);
      expect(await meanNorm(err)).toBeLessThan(0.5 * (await meanNorm(truth)));
      tf.dispose([moving, truth, fixed, field, err]);
    });

    it('returns an inverse: the velocity one composes to near identity', async () => {
      const moving = blobs(40, 48);
      const truth = randomSmoothField([40, 48], {
        maxDisplacement: 3,
        controlSpacing: 16,
        seed: 2,
      });
      const fixed = warp(moving, truth);
      const { forward: field, inverse: inverseField } = await registerImages(fixed, moving, {
        iterations: [40, 30, 20],
        inverse: true,
      });
      const c = composeFields(field, inverseField!);
      const interior = tf.slice(c, [0, 4, 4, 0], [1, 32, 40, 2]);
      expect(await meanNorm(interior)).toBeLessThan(0.05);
      tf.dispose([moving, truth, fixed, field, inverseField!, c, interior]);
    });

    it('inverts a displacement result with the deformation inversion layer', async () => {
      const moving = blobs(40, 40);
      const truth = randomSmoothField([40, 40], {
        maxDisplacement: 2.5,
        controlSpacing: 16,
        seed: 3,
      });
      const fixed = warp(moving, truth);
      const r = await registerImages(fixed, moving, {
        similarity: 'mse',
        transform: 'displacement',
        iterations: [30, 30, 30],
        regularisationWeight: 0.05,
        inverse: true,
      });
      expect(r.velocity).toBeUndefined();
      const c = composeFields(r.forward, r.inverse!);
      const interior = tf.slice(c, [0, 4, 4, 0], [1, 32, 32, 2]);
      expect(await meanNorm(interior)).toBeLessThan(0.05);
      tf.dispose([moving, truth, fixed, r.forward, r.inverse!, c, interior]);
    });

    it('registers across contrasts with any FeatureExtractor (features once per level) and any Similarity', async () => {
      // the moving image in an inverted contrast: intensity losses fail, MIND features do not
      const moving = blobs(48, 48, 5);
      const truth = randomSmoothField([48, 48], {
        maxDisplacement: 3,
        controlSpacing: 16,
        seed: 6,
      });
      const inverted = tf.tidy(() => tf.sub(tf.max(moving), moving));
      const fixed = warp(inverted, truth);
      let calls = 0;
      const features: FeatureExtractor = {
        apply: (image) => {
          calls++;
          return mindSsc(image);
        },
      };
      const before = await meanNorm(truth);
      const r = await registerImages(fixed, moving, {
        features,
        iterations: [60, 60, 60],
        affine: false,
      });
      expect(calls).toBe(6); // fixed and moving, once per level
      expect(r.affine).toBeUndefined();
      const err = tf.sub(r.forward, truth);
      expect(await meanNorm(err)).toBeLessThan(0.5 * before);
      // a user similarity on features: (fixed, moving) => scalar
      const cosine = (f: tf.Tensor, m: tf.Tensor) =>
        tf.tidy(() => tf.neg(tf.mean(tf.sum(tf.mul(f, m), -1))) as tf.Scalar);
      const r2 = await registerImages(fixed, moving, {
        features,
        similarity: cosine,
        iterations: [40, 40, 40],
        learningRate: 0.3,
      });
      const err2 = tf.sub(r2.forward, truth);
      expect(await meanNorm(err2)).toBeLessThan(0.7 * before);
      tf.dispose([moving, truth, inverted, fixed, r.forward, r.velocity!, err]);
      tf.dispose([r2.forward, r2.velocity!, r2.affine!, err2]);
    });

    it('keeps tf.memory flat: every tensor but the result is freed', async () => {
      const moving = blobs(32, 32);
      const fixed = tf.reverse(moving, 1);
      const n0 = tf.memory().numTensors;
      for (const similarity of ['lncc', 'mi', 'mse', 'mind'] as const) {
        const r = await registerImages(fixed, moving, {
          similarity,
          iterations: [5, 5, 5],
          inverse: true,
          samples: 256,
        });
        tf.dispose([r.forward, r.inverse!, r.affine!, ...(r.velocity ? [r.velocity] : [])]);
      }
      expect(tf.memory().numTensors).toBe(n0);
      tf.dispose([moving, fixed]);
    });

    it('rejects bad options with a clear message', async () => {
      const a = blobs(16, 16);
      await expect(registerImages(a, a, { similarity: 'ssd' as never })).rejects.toThrow(
        /'similarity'/,
      );
      await expect(registerImages(a, a, { iterations: [1, 2] })).rejects.toThrow(
        /'iterations' must list 3/,
      );
      await expect(registerImages(a, a, { skipFinest: 3 })).rejects.toThrow(/'skipFinest'/);
      const b = tf.zeros([1, 16, 17, 1]);
      await expect(registerImages(a, b)).rejects.toThrow(
        /\[1, 16, 16, 1\].*\[1, 16, 17, 1\]|\[1, 16, 17, 1\].*\[1, 16, 16, 1\]/,
      );
      tf.dispose([a, b]);
    });
  });
}

describe('helpers', () => {
  beforeAll(async () => {
    await initBackend('cpu', { kernels });
  });

  it('normalizeIntensity maps robust min–max to [0, 1] and constant images to 0', async () => {
    const x = tf.tensor4d([0, 1, 2, 3, 4, 5, 6, 7, 8, 100], [1, 10, 1, 1]);
    const n = await normalizeIntensity(x, 0, 90);
    const v = Array.from(await n.data());
    expect(v[0]).toBe(0);
    expect(v[9]).toBe(1);
    expect(v[4]).toBeCloseTo(0.5, 6);
    const c = await normalizeIntensity(tf.fill([1, 4, 4, 1], 3));
    expect(Array.from(await c.data()).every((z) => z === 0)).toBe(true);
    tf.dispose([x, n, c]);
  });

  it('normalizeIntensity gives exactly tfjs clip((x − lo)·scale, 0, 1) on cpu and wasm', async () => {
    for (const backend of ['cpu', 'wasm'] as const) {
      await initBackend(backend, { kernels });
      const x = tf.mul(tf.randomNormal([1, 9, 11, 7, 1], 0, 300, 'float32', 5), 1.37);
      const n = await normalizeIntensity(x, 2, 97);
      const sorted = Float32Array.from(await x.data()).sort();
      const pick = (p: number) => sorted[Math.round((p / 100) * (sorted.length - 1))]!;
      const [lo, hi] = [pick(2), pick(97)];
      const ref = tf.clipByValue(tf.mul(tf.sub(x, lo), 1 / (hi - lo)), 0, 1);
      expect(Array.from(await n.data())).toEqual(Array.from(await ref.data()));
      tf.dispose([x, n, ref]);
    }
    await initBackend('cpu', { kernels });
  });
});
