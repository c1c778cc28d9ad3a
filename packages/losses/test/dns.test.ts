/**
 * MASR-Net's losses: the Bézier intensity augmentation (properties: monotone, fixed end
 * points, seeded), the contrastive voxel loss against the infoNceLoss fixtures, the
 * foreground sampler, and smoothedCosineLoss against dns_loss_fixtures.json
 * (make_dns_loss_fixtures.py: scipy gaussian_filter + numpy, torch autograd gradients).
 */
import { readFileSync } from 'node:fs';
import { tf } from '@regkit/core';
import {
  bezierIntensityAugment,
  bezierIntensityCurve,
  contrastiveVoxelLoss,
  sampleForegroundVoxels,
  smoothedCosineLoss,
} from '@regkit/losses';
import { beforeAll, describe, expect, it } from 'vitest';
import { BACKEND_PATHS, expectClose, type FixtureCase, tensorOf, useBackend } from './helpers.js';

const load = (file: string) =>
  (
    JSON.parse(readFileSync(new URL(`./fixtures/${file}`, import.meta.url), 'utf8')) as {
      cases: FixtureCase[];
    }
  ).cases;
const infoNce = load('feature_fixtures.json').filter((c) => c.op === 'infoNceLoss');
const smoothed = load('dns_loss_fixtures.json');

describe.each(BACKEND_PATHS)('MASR-Net losses on %s (%s ops)', (backend, path) => {
  beforeAll(() => useBackend(backend, path));

  it('Bézier remap: monotone non-decreasing, B(0) = 0, B(1) = 1, inversion reverses it', () => {
    const ramp = tf.tensor4d(
      Array.from({ length: 501 }, (_, i) => i / 500),
      [1, 501, 1, 1],
    );
    let inversions = 0;
    for (let seed = 0; seed < 12; seed++) {
      const { inverted } = bezierIntensityCurve({ seed });
      const y = bezierIntensityAugment(ramp, { seed });
      const v = y.dataSync();
      y.dispose();
      const sign = inverted ? -1 : 1;
      for (let i = 1; i < v.length; i++)
        expect(sign * (v[i]! - v[i - 1]!)).toBeGreaterThanOrEqual(-1e-6);
      expect(v[inverted ? v.length - 1 : 0]).toBeCloseTo(0, 5);
      expect(v[inverted ? 0 : v.length - 1]).toBeCloseTo(1, 5);
      if (inverted) inversions++;
    }
    expect(inversions).toBeGreaterThan(0);
    expect(inversions).toBeLessThan(12);
    ramp.dispose();
  });

  it('Bézier remap: degree 1 is the identity (a straight line), δ = 1 gives 1 − I', () => {
    const x = tf.randomUniform([1, 6, 7, 1], 0, 1, 'float32', 4);
    const id = bezierIntensityAugment(x, { controlPoints: 1, invertProbability: 0, seed: 3 });
    const inv = bezierIntensityAugment(x, { controlPoints: 1, invertProbability: 1, seed: 3 });
    const one = tf.sub(1, x);
    expectClose(id, { shape: x.shape, data: Array.from(x.dataSync()) }, 1e-5, 0);
    expectClose(inv, { shape: x.shape, data: Array.from(one.dataSync()) }, 1e-5, 0);
    tf.dispose([x, id, inv, one]);
  });

  it('Bézier remap: the same seed gives the same view, another seed another one; NaN stays NaN', () => {
    const x = tf.randomUniform([1, 8, 9, 1], 0, 1, 'float32', 5);
    const [a, b, c] = [1, 1, 2].map((seed) => bezierIntensityAugment(x, { seed }));
    expect(Array.from(a!.dataSync())).toEqual(Array.from(b!.dataSync()));
    const diff = tf.max(tf.abs(tf.sub(a!, c!))).dataSync()[0]!;
    expect(diff).toBeGreaterThan(1e-3);
    const bad = tf.tensor4d([0.2, Number.NaN, 0.7, 1], [1, 2, 2, 1]);
    const out = bezierIntensityAugment(bad, { seed: 1 });
    expect(Number.isNaN(out.dataSync()[1]!)).toBe(true);
    expect(Number.isNaN(out.dataSync()[0]!)).toBe(false);
    tf.dispose([bad, out]);
    expect(() => bezierIntensityAugment(x, { invertProbability: 2 })).toThrow(
      /bezierIntensityAugment.*'invertProbability'/,
    );
    tf.dispose([x, a!, b!, c!]);
  });

  it.each(infoNce)(
    'contrastiveVoxelLoss on every voxel equals the infoNceLoss fixture $name',
    (c) => {
      tf.tidy(() => {
        const a = tensorOf(c.inputs.anchors!);
        const p = tensorOf(c.inputs.positives!);
        const [n, d] = a.shape as [number, number];
        const t = (c.params as { temperature: number }).temperature;
        const idx = tf.range(0, n, 1, 'int32');
        const loss = (x: tf.Tensor, y: tf.Tensor) =>
          contrastiveVoxelLoss(tf.reshape(x, [1, n, 1, d]), tf.reshape(y, [1, n, 1, d]), idx, {
            temperature: t,
          });
        expectClose(loss(a, p), c.outputs.loss!, 1e-4, 1e-4);
        const [ga, gp] = tf.grads(loss)([a, p]);
        expectClose(ga!, c.outputs.dAnchors!, 1e-5, 1e-3);
        expectClose(gp!, c.outputs.dPositives!, 1e-5, 1e-3);
      });
    },
  );

  it('foreground sampler: distinct foreground voxels, seeded, all when fewer', async () => {
    const img = tf.tensor4d([0, 1, 0, 2, 3, 0, 0, 4, 5, 0, 6, 0], [1, 3, 4, 1]);
    const all = await sampleForegroundVoxels(img, { samples: 100 });
    expect(Array.from(all.dataSync())).toEqual([1, 3, 4, 7, 8, 10]);
    const a = await sampleForegroundVoxels(img, { samples: 3, seed: 9 });
    const b = await sampleForegroundVoxels(img, { samples: 3, seed: 9 });
    const va = Array.from(a.dataSync());
    expect(va).toEqual(Array.from(b.dataSync()));
    expect(new Set(va).size).toBe(3);
    for (const v of va) expect([1, 3, 4, 7, 8, 10]).toContain(v);
    await expect(sampleForegroundVoxels(tf.zeros([1, 3, 3, 1]))).rejects.toThrow(
      /sampleForegroundVoxels.*0 voxels/,
    );
    tf.dispose([img, all, a, b]);
  });

  it.each(smoothed)('$name matches scipy/torch', (c) => {
    tf.tidy(() => {
      const fa = tensorOf(c.inputs.fa!);
      const fb = tensorOf(c.inputs.fb!);
      const sigma = (c.params as { sigma: number }).sigma;
      const loss = (x: tf.Tensor, y: tf.Tensor) => smoothedCosineLoss(x, y, { sigma });
      expectClose(loss(fa, fb), c.outputs.loss!, 1e-5, 1e-4);
      const [ga, gb] = tf.grads(loss)([fa, fb]);
      expectClose(ga!, c.outputs.dFa!, 1e-6, 1e-3);
      expectClose(gb!, c.outputs.dFb!, 1e-6, 1e-3);
    });
  });
});
