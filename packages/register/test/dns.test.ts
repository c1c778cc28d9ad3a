/**
 * IO with feature extractors, DNS style: per-level learning rates and λ, `featuresOnce`
 * (features extracted once, resampled per level), and the paper schedule converted to voxels.
 */
import {
  type FeatureExtractor,
  initBackend,
  mulberry32,
  randomSmoothField,
  tf,
  warp,
} from '@regkit/core';
import * as kernels from '@regkit/kernels';
import { mindSsc } from '@regkit/losses';
import { DNS_PAPER_SCHEDULE, dnsRegistrationOptions, registerImages } from '@regkit/register';
import { beforeAll, describe, expect, it } from 'vitest';

function blobs(h: number, w: number, seed = 1): tf.Tensor {
  const rand = mulberry32(seed);
  const centres = Array.from({ length: 50 }, () => [
    rand() * h,
    rand() * w,
    0.2 + rand(),
    1.5 + 3 * rand(),
  ]);
  const v = new Float32Array(h * w);
  for (let i = 0; i < h; i++) {
    for (let j = 0; j < w; j++) {
      let s = 0;
      for (const [ci, cj, a, r] of centres)
        s += a! * Math.exp(-((i - ci!) ** 2 + (j - cj!) ** 2) / (2 * r! * r!));
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

describe('registerImages with DNS-style options', () => {
  beforeAll(async () => {
    await initBackend('wasm', { kernels });
  });

  it('dnsRegistrationOptions converts the paper learning rates to voxels, lr·(n − 1)/2, and keeps λ', () => {
    const f: FeatureExtractor = { apply: (x) => x };
    const o = dnsRegistrationOptions([97, 129], f);
    // mean size 113: levels of mean size 113/4, 113/2, 113
    const half = [113 / 4, 113 / 2, 113].map((n) => (n - 1) / 2);
    expect(o.iterations).toEqual([100, 80, 50]);
    (o.learningRate as number[]).forEach((lr, l) => {
      expect(lr).toBeCloseTo(DNS_PAPER_SCHEDULE.learningRate[l]! * half[l]!, 10);
    });
    expect(o.regularisationWeight).toEqual([0.6, 0.5, 0.4]);
    expect(o.featuresOnce).toBe(true);
    expect(o.transform).toBe('displacement');
    expect(() => dnsRegistrationOptions([10, 10], {} as FeatureExtractor)).toThrow(
      /dnsRegistrationOptions.*'features'/,
    );
  });

  it('featuresOnce runs the extractor twice in all, per-level features run it twice per level', async () => {
    const moving = blobs(32, 40);
    const truth = randomSmoothField([32, 40], { maxDisplacement: 2, controlSpacing: 16, seed: 5 });
    const fixed = warp(moving, truth);
    const run = async (featuresOnce: boolean) => {
      let calls = 0;
      const features: FeatureExtractor = {
        apply: (x) => {
          calls++;
          return mindSsc(x);
        },
      };
      const r = await registerImages(fixed, moving, {
        features,
        featuresOnce,
        similarity: 'mse',
        affine: false,
        transform: 'displacement',
        iterations: [30, 30, 30],
        learningRate: [0.5, 0.5, 0.3],
        regularisationWeight: [0.1, 0.1, 0.05],
        returnVelocity: false,
      });
      const err = tf.sub(r.forward, truth);
      const e = await meanNorm(err);
      tf.dispose([r.forward, err]);
      return { calls, e };
    };
    const before = await meanNorm(truth);
    const once = await run(true);
    const per = await run(false);
    expect(once.calls).toBe(2);
    expect(per.calls).toBe(6);
    // both reduce the error of the known deformation
    expect(once.e).toBeLessThan(0.6 * before);
    expect(per.e).toBeLessThan(0.6 * before);
    await expect(registerImages(fixed, moving, { learningRate: [0.1, 0.2] })).rejects.toThrow(
      /registerImages.*'learningRate'.*list of 3/,
    );
    tf.dispose([moving, truth, fixed]);
  });
});
