/**
 * Metrics against test/fixtures/metric_fixtures.json (make_metric_fixtures.py: numpy Dice,
 * a port of MONAI's Hausdorff distance with scipy's distance_transform_edt), against brute
 * force, and closed forms; no tensor may leak.
 */
import { readFileSync } from 'node:fs';
import { affineField, initBackend, tf } from '@regkit/core';
import {
  dice,
  foldingPercent,
  hausdorff95,
  jacobianStd,
  logJacobianStd,
  meanDice,
  ncc,
  percentileOf,
  psnr,
  squaredDistanceTransform,
} from '@regkit/metrics';
import { beforeAll, describe, expect, it } from 'vitest';

interface ArrayFixture {
  shape: number[];
  data: Array<number | null>;
}
interface FixtureCase {
  name: string;
  op: string;
  params: Record<string, unknown>;
  inputs: Record<string, ArrayFixture>;
  outputs: Record<string, ArrayFixture>;
}
const cases = (
  JSON.parse(readFileSync(new URL('./fixtures/metric_fixtures.json', import.meta.url), 'utf8')) as {
    cases: FixtureCase[];
  }
).cases;
const tensorOf = (a: ArrayFixture) => tf.tensor(a.data as number[], a.shape, 'float32');

function expectValues(got: number[], expected: Array<number | null>, tol: number): void {
  expect(got.length).toBe(expected.length);
  got.forEach((g, i) => {
    const e = expected[i];
    if (e === null || e === undefined)
      expect(Number.isNaN(g), `index ${i}: got ${g}, expected NaN`).toBe(true);
    else expect(Math.abs(g - e), `index ${i}: got ${g}, expected ${e}`).toBeLessThanOrEqual(tol);
  });
}

describe.each(['cpu', 'wasm'] as const)('metrics on %s', (backend) => {
  beforeAll(async () => {
    expect(await initBackend(backend)).toBe(backend);
  });

  it.each(cases)('$name', async (c) => {
    const before = tf.memory().numTensors;
    const a = tensorOf(c.inputs.a!);
    const b = tensorOf(c.inputs.b!);
    const labels = c.params.labels as number[] | undefined;
    if (c.op === 'dice') {
      expectValues(await dice(a, b, labels ? { labels } : {}), c.outputs.dice!.data, 1e-6);
    } else if (c.op === 'hausdorff95') {
      const spacing = c.params.spacing as number[] | undefined;
      const got = await hausdorff95(a, b, {
        ...(labels ? { labels } : {}),
        ...(spacing ? { spacing } : {}),
      });
      expectValues(got, c.outputs.hd95!.data, 1e-4);
    } else {
      throw new Error(`unknown op ${c.op}`);
    }
    tf.dispose([a, b]);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('meanDice skips labels absent from both maps and the background by default', async () => {
    const a = tf.tensor([0, 1, 1, 2, 2, 2], [1, 2, 3, 1]);
    const b = tf.tensor([0, 1, 2, 2, 2, 0], [1, 2, 3, 1]);
    // label 1: 2·1/(2+1); label 2: 2·2/(3+3)
    expectValues(await dice(a, b), [2 / 3, 2 / 3, 2 / 3], 1e-12);
    expect(await meanDice(a, b)).toBeCloseTo((2 / 3 + 2 / 3) / 2, 12);
    expectValues(await dice(a, b, { labels: [2, 5] }), [2 / 3, null], 1e-12);
    expect(await meanDice(a, b, { labels: [5] })).toBeNaN();
  });

  it('the distance transform equals brute force with anisotropic spacing', () => {
    const shape = [7, 9, 6];
    const spacing = [2, 1, 0.5];
    let seed = 3;
    const rand = () => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed / 2147483648;
    };
    const mask = Uint8Array.from({ length: 7 * 9 * 6 }, () => (rand() < 0.05 ? 1 : 0));
    mask[17] = 1;
    const d2 = squaredDistanceTransform(mask, shape, spacing);
    const coords = (i: number) => [Math.floor(i / 54), Math.floor(i / 6) % 9, i % 6];
    for (let i = 0; i < mask.length; i++) {
      let best = Number.POSITIVE_INFINITY;
      const [x, y, z] = coords(i);
      for (let j = 0; j < mask.length; j++) {
        if (!mask[j]) continue;
        const [p, q, r] = coords(j);
        best = Math.min(best, ((x! - p!) * 2) ** 2 + (y! - q!) ** 2 + ((z! - r!) * 0.5) ** 2);
      }
      expect(d2[i]).toBeCloseTo(best, 9);
    }
  });

  it.each([
    { shape: [23], spacing: [0.7] },
    { shape: [37, 5], spacing: [1.5, 0.7] },
    { shape: [5, 3, 40], spacing: [0.5, 3, 1] },
    { shape: [40, 2, 19], spacing: [1, 1, 1] },
  ])('the distance transform equals brute force, shape $shape', ({ shape, spacing }) => {
    // strided axes longer and shorter than the 16-line gather block, empty lines, 1D to 3D
    const n = shape.reduce((a, b) => a * b, 1);
    let seed = 11;
    const rand = () => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed / 2147483648;
    };
    const mask = Uint8Array.from({ length: n }, () => (rand() < 0.04 ? 1 : 0));
    mask[n - 1] = 1;
    const d2 = squaredDistanceTransform(mask, shape, spacing);
    const coords = (i: number) => {
      const c: number[] = [];
      for (let k = shape.length - 1; k >= 0; k--) {
        c.unshift(i % shape[k]!);
        i = Math.floor(i / shape[k]!);
      }
      return c;
    };
    for (let i = 0; i < n; i++) {
      const x = coords(i);
      let best = Number.POSITIVE_INFINITY;
      for (let j = 0; j < n; j++) {
        if (!mask[j]) continue;
        const p = coords(j);
        best = Math.min(
          best,
          x.reduce((acc, xk, k) => acc + ((xk - p[k]!) * spacing[k]!) ** 2, 0),
        );
      }
      expect(d2[i]).toBeCloseTo(best, 9);
    }
  });

  it('two squares offset by 3 voxels have HD95 = 3 · spacing', async () => {
    const make = (off: number) => {
      const v = new Float32Array(20 * 20);
      for (let y = 5; y < 11; y++) for (let x = 5 + off; x < 11 + off; x++) v[y * 20 + x] = 1;
      return tf.tensor(v, [1, 20, 20, 1]);
    };
    const a = make(0);
    const b = make(3);
    expectValues(await hausdorff95(a, b, { labels: [1], spacing: [1, 2] }), [6], 1e-9);
    tf.dispose([a, b]);
  });

  it('percentileOf is numpy.percentile (linear) and leaves its input in order', () => {
    const v = [4, 1, 3, 2];
    expect(percentileOf(v, 50)).toBe(2.5); // np.percentile([4, 1, 3, 2], 50)
    expect(percentileOf(v, 0)).toBe(1);
    expect(percentileOf(v, 100)).toBe(4);
    expect(
      percentileOf(
        Float64Array.from({ length: 11 }, (_, i) => 10 - i),
        95,
      ),
    ).toBeCloseTo(9.5, 12);
    expect(v).toEqual([4, 1, 3, 2]);
  });

  it('Jacobian statistics, NCC and PSNR closed forms', async () => {
    const before = tf.memory().numTensors;
    const flip = affineField(
      [
        [
          [-1, 0, 0],
          [0, 1, 0],
        ],
      ],
      [6, 7],
    ); // det = −1 everywhere
    expect(await foldingPercent(flip)).toBe(100);
    const scale = affineField(
      [
        [
          [1.2, 0.1, 0],
          [0, 0.9, 0],
        ],
      ],
      [6, 7],
    ); // det = 1.08 everywhere
    expect(await foldingPercent(scale)).toBe(0);
    // u₀(i, j) = −i²/8 on a 10×7 grid: det = 1 + ∂u₀/∂i, which is 1 − i/4 by central
    // differences inside, 1 − 1/8 at i = 0 and 1 − 17/8 at i = 9 (one-sided): rows 4..9 of 10
    // fold, a percentage of 60 (not a fraction of 0.6)
    const quadratic = tf.tidy(() => {
      const i = tf.reshape(tf.range(0, 10, 1, 'float32'), [1, 10, 1, 1]);
      const u0 = tf.tile(tf.div(tf.neg(tf.square(i)), 8), [1, 1, 7, 1]);
      return tf.concat([u0, tf.zerosLike(u0)], -1);
    });
    expect(await foldingPercent(quadratic)).toBeCloseTo(60, 10);
    quadratic.dispose();
    expect(await jacobianStd(scale)).toBeLessThan(1e-6);
    expect(await logJacobianStd(scale)).toBeLessThan(1e-6);
    const a = tf.randomUniform([2, 9, 8, 1], 0, 1, 'float32', 4);
    const lin = tf.tidy(() => tf.add(tf.mul(a, 2), 1));
    expect(await ncc(a, lin)).toBeCloseTo(1, 4);
    const b = tf.add(a, 0.1);
    // mse = 0.01, range of b = range of a
    const spanT = tf.tidy(() => tf.sub(tf.max(a), tf.min(a)));
    const span = spanT.dataSync()[0]!;
    spanT.dispose();
    expect(await psnr(b, a)).toBeCloseTo(10 * Math.log10((span * span) / 0.01), 3);
    tf.dispose([flip, scale, a, b, lin]);
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('errors', () => {
  it('names both shapes', async () => {
    await initBackend('cpu');
    await expect(dice(tf.zeros([1, 4, 4, 1]), tf.zeros([1, 4, 5, 1]))).rejects.toThrow(
      /dice\(\): 'a' \[1, 4, 4, 1\] and 'b' \[1, 4, 5, 1\] must have the same shape/,
    );
    await expect(hausdorff95(tf.zeros([2, 4, 4, 1]), tf.zeros([2, 4, 4, 1]))).rejects.toThrow(
      /batch size must be 1/,
    );
  });
});
