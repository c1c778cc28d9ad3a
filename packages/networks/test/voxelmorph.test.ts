import { readFileSync } from 'node:fs';
import { composeFields, jacobianDeterminant, tf } from '@regkit/core';
import { velocityKlLoss } from '@regkit/losses';
import { createUnet, createVoxelMorph, optimalLogVariance } from '@regkit/networks';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  type ArrayFixture,
  BACKENDS,
  directionalDerivative,
  expectClose,
  tensorOf,
  useBackend,
} from './helpers.js';

interface UnetCase {
  name: string;
  params: { ndim: 2 | 3; encoder: number[]; decoder: number[] };
  inputs: { moving: ArrayFixture; fixed: ArrayFixture };
  weights: Record<string, ArrayFixture>;
  outputs: { features: ArrayFixture; velocity: ArrayFixture };
}

const cases = (
  JSON.parse(readFileSync(new URL('./fixtures/unet_fixtures.json', import.meta.url), 'utf8')) as {
    cases: UnetCase[];
  }
).cases;

describe.each(BACKENDS)('VoxelMorph on %s', (backend) => {
  beforeAll(async () => {
    await useBackend(backend);
  });

  for (const c of cases) {
    it(`U-Net and flow head match a PyTorch port of vxm.networks.Unet (${c.name})`, () => {
      const model = createVoxelMorph({ ...c.params, diffeomorphic: false });
      const weights = Object.fromEntries(
        Object.entries(c.weights).map(([k, v]) => [k, tensorOf(v)]),
      );
      model.setWeights(weights);
      tf.tidy(() => {
        const moving = tensorOf(c.inputs.moving);
        const fixed = tensorOf(c.inputs.fixed);
        const features = model.unet.apply(tf.concat([moving, fixed], -1));
        expectClose(features, c.outputs.features, 1e-4, 1e-5);
        const out = model.apply(moving, fixed);
        expectClose(out.velocity, c.outputs.velocity, 1e-4, 1e-5);
        expect(out.forward.arraySync()).toEqual(out.velocity.arraySync());
        expect(out.inverse).toBeUndefined();
      });
      tf.dispose(Object.values(weights));
      model.dispose();
    });
  }

  it('diffeomorphic outputs: a constant velocity integrates to a translation and its inverse', () => {
    const model = createVoxelMorph({ ndim: 2, encoder: [4, 8], decoder: [8, 8, 4], seed: 3 });
    tf.tidy(() => {
      model.flow.kernel.assign(tf.zerosLike(model.flow.kernel));
      model.flow.bias!.assign(tf.tensor1d([0.8, -0.5]));
    });
    tf.tidy(() => {
      const moving = tf.randomUniform([2, 32, 32, 1], 0, 1, 'float32', 1);
      const fixed = tf.randomUniform([2, 32, 32, 1], 0, 1, 'float32', 2);
      const out = model.apply(moving, fixed);
      expect(out.forward.shape).toEqual([2, 32, 32, 2]);
      const v = tf.tensor1d([0.8, -0.5]);
      // resizing to 16×16 and back scales vectors by 15/31 then 31/15: exact for constants
      expect(tf.max(tf.abs(tf.sub(out.forward, v))).dataSync()[0]!).toBeLessThan(1e-4);
      expect(tf.max(tf.abs(tf.add(out.inverse!, v))).dataSync()[0]!).toBeLessThan(1e-4);
      expect(tf.max(tf.abs(composeFields(out.forward, out.inverse!))).dataSync()[0]!).toBeLessThan(
        1e-4,
      );
      expect(tf.min(jacobianDeterminant(out.forward)).dataSync()[0]!).toBeCloseTo(1, 4);
    });
    model.dispose();
  });
});

describe('VoxelMorph', () => {
  beforeAll(async () => {
    await useBackend('wasm');
  });

  it('has the VoxelMorph default architecture and parameter count', () => {
    const unet = createUnet({ ndim: 3 });
    // vxm.networks.VxmDense(inshape 3D) U-Net: 16,32,32,32 | 32,32,32,32,32,16,16
    const convs: Array<[number, number]> = [
      [2, 16],
      [16, 32],
      [32, 32],
      [32, 32],
      [32, 32],
      [64, 32],
      [64, 32],
      [64, 32],
      [48, 32],
      [32, 16],
      [16, 16],
    ];
    const expected = convs.reduce((n, [i, o]) => n + 27 * i * o + o, 0);
    expect(unet.parameterCount).toBe(expected);
    expect(unet.outChannels).toBe(16);
    unet.dispose();
  });

  it('probabilistic: log-variance head starts at −10, sampling is seeded and differs from the mean', () => {
    const model = createVoxelMorph({
      ndim: 2,
      encoder: [4, 8],
      decoder: [8, 8, 4],
      probabilistic: true,
    });
    tf.tidy(() => {
      const m = tf.randomUniform([1, 16, 16, 1], 0, 1, 'float32', 1);
      const f = tf.randomUniform([1, 16, 16, 1], 0, 1, 'float32', 2);
      const mean = model.apply(m, f);
      expect(tf.mean(mean.logVariance!).dataSync()[0]!).toBeCloseTo(-10, 3);
      expect(mean.velocity.arraySync()).toEqual(mean.mean!.arraySync());
      const a = model.apply(m, f, { sample: true, noiseSeed: 4 });
      const b = model.apply(m, f, { sample: true, noiseSeed: 4 });
      const c = model.apply(m, f, { sample: true, noiseSeed: 5 });
      expect(a.velocity.arraySync()).toEqual(b.velocity.arraySync());
      const diff = tf.max(tf.abs(tf.sub(a.velocity, c.velocity))).dataSync()[0]!;
      expect(diff).toBeGreaterThan(1e-4); // σ = e^−5 ≈ 0.0067
      expect(diff).toBeLessThan(0.1);
    });
    model.dispose();
  });

  it('logVarianceBias sets the head; optimalLogVariance minimises the KL variance term', () => {
    const s = optimalLogVariance(2, 10);
    expect(s).toBeCloseTo(-Math.log(40), 12);
    expect(() =>
      createVoxelMorph({ ndim: 2, probabilistic: true, logVarianceBias: Number.NaN }),
    ).toThrow(/logVarianceBias/);
    const model = createVoxelMorph({
      ndim: 2,
      encoder: [4, 8],
      decoder: [8, 8, 4],
      probabilistic: true,
      logVarianceBias: s,
    });
    tf.tidy(() => {
      const m = tf.randomUniform([1, 16, 16, 1], 0, 1, 'float32', 1);
      const out = model.apply(m, m);
      expect(tf.mean(out.logVariance!).dataSync()[0]!).toBeCloseTo(s, 3);
      // interior voxels have 4 neighbours: the KL of a constant log-variance c on a large grid
      // is smallest near c = −log(4λ) (borders shift it by < 0.02)
      const zero = tf.zeros([1, 128, 128, 2]);
      const kl = (c: number) => velocityKlLoss(zero, tf.fill([1, 128, 128, 2], c)).dataSync()[0]!;
      expect(kl(s)).toBeLessThan(kl(s - 0.05));
      expect(kl(s)).toBeLessThan(kl(s + 0.05));
    });
    model.dispose();
  });

  it('gradients with respect to the weights match finite differences', () => {
    const model = createVoxelMorph({ ndim: 2, encoder: [3, 4], decoder: [4, 4, 3], seed: 2 });
    tf.tidy(() =>
      model.flow.kernel.assign(
        tf.mul(tf.randomNormal(model.flow.kernel.shape, 0, 1, 'float32', 9), 0.3),
      ),
    );
    const m = tf.randomUniform([1, 16, 16, 1], 0, 1, 'float32', 1);
    const f = tf.randomUniform([1, 16, 16, 1], 0, 1, 'float32', 2);
    const loss = () =>
      tf.tidy(() => tf.mean(tf.square(tf.sub(model.apply(m, f).warped, f))) as tf.Scalar);
    for (const v of [model.flow.kernel, model.unet.namedVariables()[0]![1]]) {
      const { analytic, numeric } = directionalDerivative(loss, v, 1e-2);
      expect(Math.abs(analytic - numeric)).toBeLessThanOrEqual(1e-5 + 0.03 * Math.abs(numeric));
      expect(Math.abs(numeric)).toBeGreaterThan(1e-6);
    }
    tf.dispose([m, f]);
    model.dispose();
  });

  it('explains bad input', () => {
    const model = createVoxelMorph({ ndim: 2 });
    expect(() => model.apply(tf.zeros([1, 20, 32, 1]), tf.zeros([1, 20, 32, 1]))).toThrow(
      /spatial sizes of \[1, 20, 32, 2\] must be divisible by 2\^4 = 16/,
    );
    expect(() => model.apply(tf.zeros([1, 16, 16, 1]), tf.zeros([1, 16, 32, 1]))).toThrow(
      /same shape/,
    );
    expect(() => model.apply(tf.zeros([1, 16, 16, 16, 1]), tf.zeros([1, 16, 16, 16, 1]))).toThrow(
      /must be a 2D image with 1 channel/,
    );
    expect(() => createVoxelMorph({ ndim: 4 as 2 })).toThrow(/'ndim' must be 2 or 3, got 4/);
    expect(() => createUnet({ ndim: 2, encoder: [4, 8], decoder: [8] })).toThrow(
      /at least 2 positive integers/,
    );
    model.dispose();
  });
});
