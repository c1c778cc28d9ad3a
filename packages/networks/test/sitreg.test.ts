import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { composeFields, jacobianDeterminant, tf } from '@regkit/core';
import {
  createSitreg,
  loadRegistrationNetwork,
  loadWeights,
  type Sitreg,
  type SitregOptions,
  saveRegistrationNetwork,
  saveWeights,
  sitregLoss,
  TrainingDivergedError,
  trainSitreg,
} from '@regkit/networks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type ArrayFixture,
  BACKENDS,
  directionalDerivative,
  expectClose,
  tensorOf,
  useBackend,
} from './helpers.js';

interface SitregCase {
  name: string;
  params: { ndim: 2 | 3; featureChannels: number[]; headChannels: number[] };
  regularisationWeight: number;
  inputs: { moving: ArrayFixture; fixed: ArrayFixture };
  weights: Record<string, ArrayFixture>;
  /** d loss / d weight by torch autograd through the converged inversion iterations. */
  gradients: Record<string, ArrayFixture>;
  outputs: {
    features: ArrayFixture[];
    forward: ArrayFixture;
    inverse: ArrayFixture;
    warped: ArrayFixture;
    similarity: number;
    regularisation: number;
    loss: number;
  };
}

const cases = (
  JSON.parse(readFileSync(new URL('./fixtures/sitreg_fixtures.json', import.meta.url), 'utf8')) as {
    cases: SitregCase[];
  }
).cases;

const tmp = mkdtempSync(join(tmpdir(), 'regkit-sitreg-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Inversions converged to float32 precision (the fixture's are exact in float64). */
const TIGHT = {
  tolerance: 1e-5,
  maxIterations: 500,
  backward: { tolerance: 1e-7, maxIterations: 500 },
};

const tiny: SitregOptions = {
  ndim: 2,
  featureChannels: [2, 4, 4],
  headChannels: [4, 4, 4],
};

const max = (t: tf.Tensor) => tf.tidy(() => tf.max(t).dataSync()[0]!);
const min = (t: tf.Tensor) => tf.tidy(() => tf.min(t).dataSync()[0]!);
const maxAbsDiff = (a: tf.Tensor, b: tf.Tensor) => tf.tidy(() => max(tf.abs(tf.sub(a, b))));

/** A Gaussian blob of radius r at (cy, cx) on a size×size grid, `[1, size, size, 1]`. */
function blob(size: number, cy: number, cx: number, r = 5): tf.Tensor {
  const v = new Float32Array(size * size);
  for (let i = 0; i < size; i++) {
    for (let j = 0; j < size; j++) {
      v[i * size + j] = Math.exp(-((i - cy) ** 2 + (j - cx) ** 2) / (2 * r * r));
    }
  }
  return tf.tensor(v, [1, size, size, 1]);
}

/** Two different smooth images (sums of blobs), `[1, size, size, 1]` each. */
function imagePair(size: number): { a: tf.Tensor; b: tf.Tensor } {
  const s = size / 32;
  return tf.tidy(() => ({
    a: tf.addN([blob(size, 10 * s, 12 * s, 4 * s), tf.mul(blob(size, 20 * s, 22 * s, 6 * s), 0.7)]),
    b: tf.addN([blob(size, 13 * s, 10 * s, 5 * s), tf.mul(blob(size, 19 * s, 20 * s, 4 * s), 0.9)]),
  }));
}

/** Multiplies the final convolution of every head by `s` (larger: rougher deformations). */
function scaleHeads(model: Sitreg, s: number): void {
  tf.tidy(() => {
    for (const h of model.heads) h.out.kernel.assign(tf.mul(h.out.kernel, s));
  });
}

describe.each(BACKENDS)('SITReg on %s', (backend) => {
  beforeAll(async () => {
    await useBackend(backend);
  });

  for (const c of cases) {
    it(`matches a PyTorch port of the official SITReg: outputs, loss, gradients (${c.name})`, () => {
      const model = createSitreg({ ...c.params, inversion: TIGHT });
      const weights = Object.fromEntries(
        Object.entries(c.weights).map(([k, v]) => [k, tensorOf(v)]),
      );
      model.setWeights(weights);
      tf.dispose(Object.values(weights));
      tf.tidy(() => {
        const moving = tensorOf(c.inputs.moving);
        const fixed = tensorOf(c.inputs.fixed);
        const features = model.extractor.apply(tf.concat([moving, fixed], 0));
        expect(features.length).toBe(c.outputs.features.length);
        for (const [l, f] of features.entries()) {
          expectClose(f, c.outputs.features[l]!, 1e-4, 1e-5);
        }
        const out = model.apply(moving, fixed);
        expectClose(out.forward, c.outputs.forward, 2e-4, 0);
        expectClose(out.inverse, c.outputs.inverse, 2e-4, 0);
        expectClose(out.warped, c.outputs.warped, 2e-4, 0);
        const terms = sitregLoss(model, moving, fixed, {
          regularisationWeight: c.regularisationWeight,
        });
        expect(terms.similarity.dataSync()[0]!).toBeCloseTo(c.outputs.similarity, 4);
        expect(terms.regularisation.dataSync()[0]!).toBeCloseTo(c.outputs.regularisation, 5);
        expect(terms.loss.dataSync()[0]!).toBeCloseTo(c.outputs.loss, 4);
        // every weight's gradient (implicit gradients through the inversions)
        const named = model.namedVariables();
        const { value, grads } = tf.variableGrads(
          () =>
            sitregLoss(model, moving, fixed, { regularisationWeight: c.regularisationWeight }).loss,
          named.map(([, v]) => v),
        );
        expect(value.dataSync()[0]!).toBeCloseTo(c.outputs.loss, 4);
        const scale = Math.max(...Object.values(c.gradients).flatMap((g) => g.data.map(Math.abs)));
        for (const [path, v] of named) {
          expectClose(grads[v.name]!, c.gradients[path]!, 1e-5 * scale, 1e-4);
        }
      });
      model.dispose();
    });
  }

  it('swapping the inputs swaps forward and inverse (symmetric by construction)', () => {
    const { a, b } = imagePair(32);
    for (const scale of [1, 100]) {
      const model = createSitreg({ ...tiny, seed: 4 });
      scaleHeads(model, scale);
      tf.tidy(() => {
        const ab = model.apply(a, b);
        const ba = model.apply(b, a);
        expect(max(tf.abs(ab.forward))).toBeGreaterThan(0.3); // a non-trivial deformation
        expect(maxAbsDiff(ba.forward, ab.inverse), `scale ${scale}`).toBeLessThan(1e-5);
        expect(maxAbsDiff(ba.inverse, ab.forward), `scale ${scale}`).toBeLessThan(1e-5);
        expect(maxAbsDiff(ba.warped, ab.warpedFixed), `scale ${scale}`).toBeLessThan(1e-5);
        // the same for a batch of two pairs in either order
        const pair = model.apply(tf.concat([a, b], 0), tf.concat([b, a], 0));
        const [f0, f1] = tf.split(pair.forward, 2, 0) as [tf.Tensor, tf.Tensor];
        const [i0, i1] = tf.split(pair.inverse, 2, 0) as [tf.Tensor, tf.Tensor];
        expect(maxAbsDiff(f0, i1)).toBeLessThan(1e-5);
        expect(maxAbsDiff(f1, i0)).toBeLessThan(1e-5);
        expect(maxAbsDiff(f0, ab.forward)).toBeLessThan(1e-5);
      });
      model.dispose();
    }
    tf.dispose([a, b]);
  });

  it('forward ∘ inverse ≈ identity, no folding even with saturated control points', () => {
    const { a, b } = imagePair(32);
    const icError = (out: { forward: tf.Tensor; inverse: tf.Tensor }) =>
      tf.tidy(() => {
        const e = tf.concat([
          tf.abs(composeFields(out.forward, out.inverse)),
          tf.abs(composeFields(out.inverse, out.forward)),
        ]);
        return { max: max(e), mean: tf.mean(e).dataSync()[0]! };
      });
    // head output scale, bounds of the max and mean inverse consistency error (voxels)
    for (const [scale, icMax, icMean] of [
      [0.1, 0.02, 1e-3],
      [0.3, 0.08, 6e-3],
      [1, 0.3, 0.025],
      [100, null, null],
    ] as const) {
      const model = createSitreg({ ...tiny, seed: 7 });
      const tight = createSitreg({ ...tiny, seed: 7, inversion: TIGHT });
      scaleHeads(model, scale);
      scaleHeads(tight, scale);
      tf.tidy(() => {
        const out = model.apply(a, b);
        for (const field of [out.forward, out.inverse]) {
          expect(min(jacobianDeterminant(field)), `scale ${scale}`).toBeGreaterThan(0.1);
        }
        if (icMax !== null && icMean !== null) {
          const e = icError(out);
          expect(e.max, `scale ${scale}`).toBeLessThan(icMax);
          expect(e.mean, `scale ${scale}`).toBeLessThan(icMean);
          // linear resampling of the composed fields dominates, not the inversion tolerance
          const exact = icError(tight.apply(a, b));
          expect(Math.abs(e.mean - exact.mean), `scale ${scale}`).toBeLessThan(2e-4);
        }
      });
      model.dispose();
      tight.dispose();
    }
    tf.dispose([a, b]);
  });

  it('gradients with respect to the weights match finite differences', () => {
    const model = createSitreg({
      ...tiny,
      featureChannels: [2, 4],
      headChannels: [4, 4],
      seed: 5,
      inversion: TIGHT,
    });
    // ReLU after GroupNorm: shifting every normalised map by +2 keeps most units away from
    // the kink, and small steps keep few samples from crossing voxel boundaries (where the
    // linear interpolation has kinks too); the PyTorch test above checks exact gradients
    tf.tidy(() => {
      for (const [p, v] of model.namedVariables()) {
        if (p.endsWith('/beta')) v.assign(tf.fill(v.shape, 2));
      }
    });
    const { a, b } = imagePair(16);
    const loss = () =>
      tf.tidy(
        () => sitregLoss(model, a, b, { maskOutsideFov: false, regularisationWeight: 2 }).loss,
      );
    const byPath = new Map(model.namedVariables());
    for (const path of [
      'head0/out/kernel',
      'head1/out/kernel',
      'head1/block/norm0/gamma',
      'extractor/projection/kernel',
      'extractor/down1/kernel',
      'extractor/skip1/kernel',
      'extractor/level0/conv0/kernel',
    ]) {
      const { analytic, numeric } = directionalDerivative(loss, byPath.get(path)!, 1e-3);
      expect(Math.abs(numeric), path).toBeGreaterThan(1e-4);
      expect(Math.abs(analytic - numeric), `${path}: ${analytic} vs ${numeric}`).toBeLessThan(
        5e-5 + 0.03 * Math.abs(numeric),
      );
    }
    tf.dispose([a, b]);
    model.dispose();
  });
});

describe('SITReg', () => {
  beforeAll(async () => {
    await useBackend('wasm');
  });

  it('has the official OASIS architecture by default (3D parameter count)', () => {
    const model = createSitreg({ ndim: 3 });
    expect(model.featureChannels).toEqual([8, 40, 40, 40]);
    expect(model.headChannels).toEqual([16, 72, 72, 72]);
    const conv = (ci: number, co: number, k: number) => k ** 3 * ci * co + co;
    const block = (ci: number, co: number) => conv(ci, co, 3) + conv(co, co, 3) + 4 * co;
    const f = [8, 40, 40, 40];
    const h = [16, 72, 72, 72];
    let expected = conv(1, 8, 1) + block(8, 8);
    for (let l = 1; l < 4; l++) {
      expected += conv(f[l - 1]!, f[l]!, 2) + conv(f[l - 1]!, f[l]!, 1) + block(f[l]!, f[l]!);
    }
    for (let l = 0; l < 4; l++) expected += block(2 * f[l]!, h[l]!) + conv(h[l]!, 3, 1);
    expect(model.parameterCount).toBe(expected);
    model.dispose();
    const small = createSitreg({ ndim: 2, width: 0.25 });
    expect(small.featureChannels).toEqual([2, 10, 10, 10]);
    expect(small.headChannels).toEqual([4, 18, 18, 18]);
    expect(small.levels).toBe(4);
    small.dispose();
  });

  it('trainSitreg registers a shifted blob and keeps the tensor count flat', async () => {
    const model = createSitreg({ ...tiny, featureChannels: [4, 8, 8], headChannels: [8, 8, 8] });
    const pair = () => tf.tidy(() => ({ moving: blob(32, 16, 13), fixed: blob(32, 16, 18) }));
    const counts: number[] = [];
    const losses: number[] = [];
    const result = await trainSitreg({
      model,
      data: pair,
      epochs: 5,
      stepsPerEpoch: 8,
      learningRate: 1e-2,
      onProgress: (p) => {
        counts.push(tf.memory().numTensors);
        losses.push(p.loss);
      },
    });
    expect(result.history.length).toBe(5);
    // Adam's moments are created in the first step; after that the count never changes
    expect(new Set(counts.slice(1)).size).toBe(1);
    const first = losses.slice(0, 3).reduce((s, v) => s + v, 0) / 3;
    const last = losses.slice(-3).reduce((s, v) => s + v, 0) / 3;
    expect(last).toBeLessThan(first - 0.1);
    const { moving, fixed } = pair();
    tf.tidy(() => {
      const out = model.apply(moving, fixed);
      const before = tf.mean(tf.square(tf.sub(moving, fixed))).dataSync()[0]!;
      const after = tf.mean(tf.square(tf.sub(out.warped, fixed))).dataSync()[0]!;
      expect(after).toBeLessThan(0.5 * before);
      expect(min(jacobianDeterminant(out.forward))).toBeGreaterThan(0);
    });
    tf.dispose([moving, fixed]);
    model.dispose();
  });

  it('trainSitreg checkpoints: a run resumed from epoch 2 ends with the weights of an uninterrupted one', async () => {
    const { mkdtempSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = mkdtempSync(join(tmpdir(), 'regkit-sitreg-ckpt-'));
    const options = { ...tiny, featureChannels: [4, 8, 8], headChannels: [8, 8, 8], seed: 4 };
    const data = (epoch: number, step: number) =>
      tf.tidy(() => ({ moving: blob(32, 16, 13 + ((epoch + step) % 3)), fixed: blob(32, 16, 18) }));
    const common = { data, stepsPerEpoch: 3, learningRate: 1e-2 };
    try {
      const straight = createSitreg(options);
      await trainSitreg({ model: straight, epochs: 3, ...common });
      const resumed = createSitreg(options);
      await trainSitreg({ model: resumed, epochs: 2, ...common, checkpointDir: dir });
      resumed.dispose();
      const again = createSitreg(options);
      const result = await trainSitreg({ model: again, epochs: 3, ...common, checkpointDir: dir });
      expect(result.resumedFromEpoch).toBe(2);
      const a = straight.getWeights();
      const b = again.getWeights();
      for (const k of Object.keys(a)) {
        expect(tf.max(tf.abs(tf.sub(a[k]!, b[k]!))).dataSync()[0]!, k).toBeLessThan(1e-6);
      }
      tf.dispose([...Object.values(a), ...Object.values(b)]);
      straight.dispose();
      again.dispose();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('trainSitreg stops on a non-finite loss before updating', async () => {
    const model = createSitreg({ ...tiny, seed: 2 });
    const before = model.getWeights();
    await expect(
      trainSitreg({
        model,
        epochs: 1,
        data: () => ({
          moving: tf.fill([1, 16, 16, 1], Number.NaN),
          fixed: tf.ones([1, 16, 16, 1]),
        }),
      }),
    ).rejects.toThrow(TrainingDivergedError);
    const after = model.getWeights();
    for (const [p, t] of Object.entries(before)) {
      expect(maxAbsDiff(t, after[p]!), p).toBe(0);
    }
    tf.dispose([...Object.values(before), ...Object.values(after)]);
    model.dispose();
  });

  it('round-trips its weights through saveWeights/loadWeights and loadRegistrationNetwork', async () => {
    const options = { ...tiny, seed: 8 };
    const model = createSitreg(options);
    const other = createSitreg({ ...tiny, seed: 9 });
    const { a, b } = imagePair(16);
    await saveWeights(model, join(tmp, 'weights'), { options });
    const metadata = await loadWeights(other, join(tmp, 'weights'));
    expect(metadata).toEqual({ options });
    await saveRegistrationNetwork(join(tmp, 'net'), model, {
      method: 'sitreg',
      options: { ...options },
      inputShape: [16, 16],
    });
    const net = await loadRegistrationNetwork(join(tmp, 'net'));
    tf.tidy(() => {
      const x = model.apply(a, b);
      const y = other.apply(a, b);
      expect(y.forward.arraySync()).toEqual(x.forward.arraySync());
      expect(y.inverse.arraySync()).toEqual(x.inverse.arraySync());
      const z = net.predict(a, b);
      expect(z.forward.arraySync()).toEqual(x.forward.arraySync());
      expect(z.inverse!.arraySync()).toEqual(x.inverse.arraySync());
    });
    const mismatch = createSitreg({ ...tiny, headChannels: [4, 4, 6] });
    await expect(loadWeights(mismatch, join(tmp, 'weights'))).rejects.toThrow(
      /head2\/block\/conv0\/kernel' must have shape \[3, 3, 8, 6\]/,
    );
    tf.dispose([a, b]);
    for (const m of [model, other, mismatch]) m.dispose();
    net.dispose();
  });

  it('explains bad options and input', () => {
    expect(() => createSitreg({ ndim: 4 as 2 })).toThrow(/'ndim' must be 2 or 3, got 4/);
    expect(() =>
      createSitreg({ ndim: 2, featureChannels: [2, 4], headChannels: [4, 4, 4] }),
    ).toThrow(/'headChannels' must be a positive integer or 2 positive integers \(one per level\)/);
    expect(() => createSitreg({ ndim: 2, featureChannels: [3, 4] })).toThrow(
      /3 channels are not divisible by groupNormGroups = 2/,
    );
    expect(() => createSitreg({ ndim: 2, width: 0 })).toThrow(
      /'width' must be a finite number > 0/,
    );
    expect(() => createSitreg({ ndim: 2, multiplier: 1.2 })).toThrow(
      /'multiplier' must be in \(0, 1\)/,
    );
    const model = createSitreg({ ...tiny });
    expect(() => model.apply(tf.zeros([1, 18, 16, 1]), tf.zeros([1, 18, 16, 1]))).toThrow(
      /spatial sizes of \[1, 18, 16, 1\] must be divisible by 2\^2 = 4/,
    );
    expect(() => model.apply(tf.zeros([1, 16, 16, 1]), tf.zeros([1, 16, 32, 1]))).toThrow(
      /same shape/,
    );
    expect(() => model.apply(tf.zeros([1, 16, 16, 2]), tf.zeros([1, 16, 16, 2]))).toThrow(
      /must be a 2D image with 1 channel/,
    );
    expect(() =>
      sitregLoss(model, tf.zeros([1, 16, 16, 1]), tf.zeros([1, 16, 16, 1]), { window: 4 }),
    ).toThrow(/'window' must be an odd positive integer, got 4/);
    model.dispose();
  });
});
