import { gaussianSmooth, resizeImage, resizeLinear, tf } from '@regkit/core';
import { beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS, useBackend } from './helpers.js';

for (const backend of BACKENDS) {
  describe(`resizeImage (${backend})`, () => {
    beforeAll(async () => {
      await useBackend(backend);
    });

    it('keeps corners (aligned) and constant images', async () => {
      const x = tf.tensor4d([0, 1, 2, 3, 4, 5, 6, 7, 8], [1, 3, 3, 1]);
      const up = resizeImage(x, [5, 5]);
      const v = await up.data();
      expect(v[0]).toBeCloseTo(0, 5);
      expect(v[4]).toBeCloseTo(2, 5);
      expect(v[24]).toBeCloseTo(8, 5);
      expect(v[12]).toBeCloseTo(4, 5);
      const c = resizeImage(tf.fill([1, 9, 9, 1], 2), [5, 5]);
      expect(Array.from(await c.data()).every((z) => Math.abs(z - 2) < 1e-5)).toBe(true);
      tf.dispose([x, up, c]);
    });

    it('reproduces a linear ramp away from the borders when shrinking a 3D batch', async () => {
      // f(i, j, k) = i + 2j − k (+ b) on 17×17×9, shrunk to 9×9×5: aligned corners sample the
      // source at 2i, 2j, 2k; the σ = 1 smoothing keeps linear functions where its 4σ support
      // stays inside the volume (source indices 4…12 in-plane, 4 along the last axis)
      const [D, H, W] = [17, 17, 9];
      const v = new Float32Array(2 * D * H * W);
      for (let b = 0; b < 2; b++)
        for (let i = 0; i < D; i++)
          for (let j = 0; j < H; j++)
            for (let k = 0; k < W; k++) v[((b * D + i) * H + j) * W + k] = i + 2 * j - k + b;
      const x = tf.tensor(v, [2, D, H, W, 1]);
      const y = resizeImage(x, [9, 9, 5]);
      expect(y.shape).toEqual([2, 9, 9, 5, 1]);
      const got = await y.data();
      for (let b = 0; b < 2; b++)
        for (let i = 2; i <= 6; i++)
          for (let j = 2; j <= 6; j++) {
            const want = 2 * i + 4 * j - 4 + b; // output k = 2 → source k = 4
            expect(got[((b * 9 + i) * 9 + j) * 5 + 2]).toBeCloseTo(want, 3);
          }
      tf.dispose([x, y]);
    });

    it('equals resizeLinear(gaussianSmooth(x, σ = ratio/2)) in value and gradient (2D and 3D, up and down)', async () => {
      // the dense per-axis matrices against the two ops they compose (each tested against
      // scipy/PyTorch fixtures): non-integer ratios, a shrinking and a growing axis
      for (const [from, to] of [
        [
          [37, 23],
          [15, 31],
        ],
        [
          [19, 26, 11],
          [10, 26, 16],
        ],
      ] as const) {
        const x = tf.randomNormal([2, ...from, 2], 0, 1, 'float32', 7);
        const w = tf.randomNormal([2, ...to, 2], 0, 1, 'float32', 8);
        const sigma = from.map((n, k) => {
          const r = (n - 1) / (to[k]! - 1);
          return r > 1 ? 0.5 * r : 0;
        });
        const reference = (v: tf.Tensor) => resizeLinear(gaussianSmooth(v, sigma), to);
        const ours = resizeImage(x, to);
        const ref = reference(x);
        const err = tf.max(tf.abs(tf.sub(ours, ref))).dataSync()[0]!;
        expect(err).toBeLessThan(2e-5);
        const g = tf.grad((v: tf.Tensor) => tf.sum(tf.mul(resizeImage(v, to), w)))(x);
        const gRef = tf.grad((v: tf.Tensor) => tf.sum(tf.mul(reference(v), w)))(x);
        expect(tf.max(tf.abs(tf.sub(g, gRef))).dataSync()[0]!).toBeLessThan(2e-5);
        tf.dispose([x, w, ours, ref, g, gRef]);
      }
    });

    it('names the shapes when the ranks disagree', () => {
      const x = tf.zeros([1, 4, 4, 1]);
      expect(() => resizeImage(x, [2, 2, 2])).toThrow(
        /\[1, 4, 4, 1\] cannot be resized to \[2,2,2\]/,
      );
      x.dispose();
    });
  });
}
