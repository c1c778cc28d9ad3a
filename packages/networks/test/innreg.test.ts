import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { composeFields, tf } from '@regkit/core';
import { ddwDenseBlockSubnet } from '@regkit/inn';
import { barrierNmiLoss } from '@regkit/losses';
import {
  createInnreg,
  createInnregRegistrationNet,
  type Innreg,
  type InnregLossOptions,
  type InnregLossWeights,
  type InnregOptions,
  loadRegistrationNetwork,
  loadWeights,
  saveRegistrationNetwork,
  saveWeights,
  TrainingDivergedError,
  trainInnreg,
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

interface InnregCase {
  name: string;
  params: {
    ndim: 2 | 3;
    registration: { encoder: number[]; decoder: number[] };
    translator: { blocks: number };
    subnet: { growth: number; attention: { kernelSize: number; bases: number } };
    weights: InnregLossWeights;
    barrier: number;
  };
  loss: InnregLossOptions;
  inputs?: { x: ArrayFixture; y: ArrayFixture };
  weights?: Record<string, ArrayFixture>;
  weightsFrom?: string;
  /** d total loss / d weight, torch autograd (float64). */
  gradients: Record<string, ArrayFixture>;
  outputs: {
    forward: ArrayFixture;
    warped: ArrayFixture;
    fakeY: ArrayFixture;
    recon: number;
    nmi: number;
    inn: number;
    smooth: number;
    inverseRecon: number;
    loss: number;
  };
}

const cases = (
  JSON.parse(readFileSync(new URL('./fixtures/innreg_fixtures.json', import.meta.url), 'utf8')) as {
    cases: InnregCase[];
  }
).cases;
const byName = new Map(cases.map((c) => [c.name, c]));
const inputsOf = (c: InnregCase) => (c.inputs ?? byName.get(c.weightsFrom!)!.inputs)!;
const weightsOf = (c: InnregCase) => (c.weights ?? byName.get(c.weightsFrom!)!.weights)!;

const tmp = mkdtempSync(join(tmpdir(), 'regkit-innreg-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const scalar = (t: tf.Tensor) => t.dataSync()[0]!;
const maxAbs = (t: tf.Tensor) => tf.tidy(() => scalar(tf.max(tf.abs(t))));

/** The model of a fixture case with the fixture's weights. */
function fixtureModel(c: InnregCase): Innreg {
  const p = c.params;
  const model = createInnreg({
    ndim: p.ndim,
    translator: { blocks: p.translator.blocks, subnet: ddwDenseBlockSubnet(p.subnet) },
    registration: p.registration,
    weights: p.weights,
    barrier: p.barrier,
  });
  const weights = Object.fromEntries(
    Object.entries(weightsOf(c)).map(([k, v]) => [k, tensorOf(v)]),
  );
  model.setWeights(weights);
  tf.dispose(Object.values(weights));
  return model;
}

/** Small models for fast tests: 2 coupling blocks with narrow DDWConv subnets, a 2-level R. */
const small = (extra: Partial<InnregOptions> = {}): InnregOptions => ({
  ndim: 2,
  translator: {
    blocks: 2,
    subnet: ddwDenseBlockSubnet({ growth: 8, attention: { kernelSize: 3 } }),
  },
  registration: { encoder: [8, 16], decoder: [16, 16, 8] },
  ...extra,
});

/** A Gaussian blob of radius r at (cy, cx) on a size×size grid, `[1, size, size, 1]`. */
function blob(size: number, cy: number, cx: number, r = 6): tf.Tensor {
  const v = new Float32Array(size * size);
  for (let i = 0; i < size; i++) {
    for (let j = 0; j < size; j++) {
      v[i * size + j] = Math.exp(-((i - cy) ** 2 + (j - cx) ** 2) / (2 * r * r));
    }
  }
  return tf.tensor(v, [1, size, size, 1]);
}

/**
 * A synthetic multi-modal pair: x a bright blob on a dark background, y the inverted-intensity
 * copy shifted by 5 voxels (so x ∘ φ ≈ 1 − y for the right φ).
 */
function modalPair(size = 32): { moving: tf.Tensor; fixed: tf.Tensor } {
  return tf.tidy(() => ({
    moving: tf.add(tf.mul(blob(size, 16, 13), 0.9), 0.05),
    fixed: tf.sub(0.95, tf.mul(blob(size, 16, 18), 0.9)),
  }));
}

describe.each(BACKENDS)('INNReg on %s', (backend) => {
  beforeAll(async () => {
    await useBackend(backend);
  });

  for (const c of cases) {
    it(`R, T, the loss terms and every gradient match a PyTorch port (${c.name})`, () => {
      const model = fixtureModel(c);
      const x = tensorOf(inputsOf(c).x);
      const y = tensorOf(inputsOf(c).y);
      tf.tidy(() => {
        const out = model.apply(x, y);
        expectClose(out.forward, c.outputs.forward, 1e-4, 1e-4);
        expectClose(out.warped, c.outputs.warped, 1e-4, 1e-4);
        expect(out.inverse).toBeUndefined();
        expectClose(model.translate(x), c.outputs.fakeY, 1e-4, 1e-4);
        const terms = model.loss(x, y, c.loss);
        for (const k of ['recon', 'nmi', 'smooth', 'inverseRecon', 'loss'] as const) {
          const want = c.outputs[k];
          expect(Math.abs(scalar(terms[k]) - want), k).toBeLessThan(2e-5 + 2e-4 * Math.abs(want));
        }
        // T⁻¹(T(x)) = x up to float32 rounding (the reference is ~1e−16)
        expect(Math.abs(scalar(terms.inn))).toBeLessThan(1e-5);
      });
      const vars = model
        .namedVariables()
        .filter(([, v]) => v.trainable)
        .map(([p, v]) => ({ p, v }));
      expect(vars.map((e) => e.p).sort()).toEqual(Object.keys(c.gradients).sort());
      const { value, grads } = tf.variableGrads(
        () => model.loss(x, y, c.loss).loss,
        vars.map((e) => e.v),
      );
      for (const { p, v } of vars) expectClose(grads[v.name]!, c.gradients[p]!, 1e-4, 2e-3);
      tf.dispose([value, ...Object.values(grads), x, y]);
      model.dispose();
    });
  }

  it('gradients with respect to weights of R and T match central finite differences', () => {
    const c = byName.get('2d_barrier_batch2')!;
    const model = fixtureModel(c);
    const x = tensorOf(inputsOf(c).x);
    const y = tensorOf(inputsOf(c).y);
    const loss = () => tf.tidy(() => model.loss(x, y, c.loss).loss);
    const byPath = new Map(model.namedVariables());
    for (const path of [
      'registration/enc0/conv1/kernel',
      'registration/enc1/conv2/bias',
      'registration/out0/skip/kernel',
      'registration/flow/kernel',
      'translator/block1/F/conv2/kernel',
      // not 'translator/block2/G/attention/bases': its directional derivative here (≈ 1.2e-3)
      // is within a few float32 ulps of the loss over the step, so central differences give
      // 0.95e-3 to 1.2e-3 by rounding alone; its gradient is checked against PyTorch autograd
      // above and by kink-free finite differences in packages/inn (logdet_gradients.test.ts)
      'translator/block2/H/conv5/kernel',
      'translator/block1/invconv/lower',
      'translator/block2/invconv/logScale',
    ]) {
      const { analytic, numeric } = directionalDerivative(loss, byPath.get(path)!, 1e-3);
      expect(Math.abs(numeric), path).toBeGreaterThan(1e-3);
      expect(Math.abs(analytic - numeric), `${path}: ${analytic} vs ${numeric}`).toBeLessThan(
        2e-3 + 0.03 * Math.abs(numeric),
      );
    }
    tf.dispose([x, y]);
    model.dispose();
  });

  it('R starts at the identity: a zero flow head gives u = 0 and warped = moving', () => {
    const net = createInnregRegistrationNet({ ndim: 2, flowInitStd: 0, seed: 2 });
    const vxmInit = createInnregRegistrationNet({ ndim: 2, seed: 2 });
    const { moving, fixed } = modalPair(32);
    tf.tidy(() => {
      const out = net.apply(moving, fixed);
      expect(out.forward.shape).toEqual([1, 32, 32, 2]);
      expect(maxAbs(out.forward)).toBe(0);
      expect(maxAbs(tf.sub(out.warped, moving))).toBeLessThan(1e-6);
      // VoxelMorph's N(0, 1e−5) flow head: nearly the identity
      expect(maxAbs(vxmInit.apply(moving, fixed).forward)).toBeLessThan(1e-3);
    });
    tf.dispose([moving, fixed]);
    net.dispose();
    vxmInit.dispose();
  });

  it('closed forms: identical images through an identity translator give recon = inn = smooth = 0', () => {
    // without the 1×1 convolutions the coupling blocks start as the identity (F = G = H = 0)
    const model = createInnreg(
      small({
        translator: { blocks: 2, invertibleConv: false, subnet: 'dense' },
        registration: { encoder: [4, 8], decoder: [8, 8, 4], flowInitStd: 0 },
      }),
    );
    const { moving } = modalPair(32);
    tf.tidy(() => {
      expect(maxAbs(tf.sub(model.translate(moving), moving))).toBe(0);
      const t = model.loss(moving, moving);
      expect(scalar(t.recon)).toBe(0);
      expect(scalar(t.inn)).toBe(0);
      expect(scalar(t.smooth)).toBe(0);
      expect(scalar(t.inverseRecon)).toBe(0);
      // the loss is then λ_β times the barrier NMI of the image with itself
      const nmi = scalar(barrierNmiLoss(moving, moving, { bound: 5 }));
      expect(scalar(t.nmi)).toBeCloseTo(nmi, 5);
      expect(scalar(t.loss)).toBeCloseTo(nmi, 5);
    });
    tf.dispose(moving);
    model.dispose();
  });

  it('exact inverse: L_INN ≈ 0 (< 1e−5) for a default-width translator with trained-like weights', () => {
    const model = createInnreg({
      ndim: 2,
      translator: { blocks: 3 },
      registration: { encoder: [4, 8], decoder: [8, 8, 4] },
      seed: 3,
    });
    // every zero-initialised last convolution gets random weights, so T is far from identity
    tf.tidy(() => {
      for (const [p, v] of model.translator.namedVariables()) {
        if (p.endsWith('conv5/kernel')) v.assign(tf.randomNormal(v.shape, 0, 0.05, 'float32', 7));
      }
    });
    const { moving, fixed } = modalPair(32);
    tf.tidy(() => {
      const fake = model.translate(moving);
      expect(maxAbs(tf.sub(fake, moving))).toBeGreaterThan(0.05);
      const t = model.loss(moving, fixed);
      expect(scalar(t.inn)).toBeLessThan(1e-5);
      const off = model.loss(moving, fixed, { crossTranslation: false });
      expect(scalar(off.inn)).toBe(0);
      // switching the term off changes the total by exactly λ_γ·L_INN
      expect(scalar(t.loss) - scalar(off.loss)).toBeCloseTo(0.1 * scalar(t.inn), 6);
    });
    tf.dispose([moving, fixed]);
    model.dispose();
  });

  it("'plain' NMI is the I_NMI inside the barrier: barrier = −log(b − I)", () => {
    const model = createInnreg(small({ barrier: 12, seed: 4 }));
    const { moving, fixed } = modalPair(32);
    tf.tidy(() => {
      const barrier = scalar(model.loss(moving, fixed).nmi);
      const plain = scalar(model.loss(moving, fixed, { nmi: 'plain' }).nmi);
      expect(plain).toBeGreaterThan(2);
      // the barrier's MI has MONAI's ε placement, 'plain' uses H(A) + H(B) − H(A, B)
      expect(Math.abs(12 - Math.exp(-barrier) - plain)).toBeLessThan(1e-3 * plain);
      const code = scalar(model.loss(moving, fixed, { barrierForm: 'code' }).nmi);
      expect(code).toBeLessThan(-Math.log(12 - 1)); // I = 1 − MI < 1
    });
    tf.dispose([moving, fixed]);
    model.dispose();
  });

  it('diffeomorphic R: a constant velocity integrates to a translation and its inverse', () => {
    const net = createInnregRegistrationNet({
      ndim: 2,
      encoder: [4, 8],
      decoder: [8, 8, 4],
      diffeomorphic: true,
    });
    tf.tidy(() => {
      net.flow.kernel.assign(tf.zerosLike(net.flow.kernel));
      net.flow.bias!.assign(tf.tensor1d([0.8, -0.5]));
    });
    const { moving, fixed } = modalPair(32);
    tf.tidy(() => {
      const out = net.apply(moving, fixed);
      const v = tf.tensor1d([0.8, -0.5]);
      expect(maxAbs(tf.sub(out.forward, v))).toBeLessThan(1e-4);
      expect(maxAbs(tf.add(out.inverse!, v))).toBeLessThan(1e-4);
      expect(maxAbs(composeFields(out.forward, out.inverse!))).toBeLessThan(1e-4);
      expect(maxAbs(tf.sub(out.velocity!, v))).toBeLessThan(1e-6);
    });
    tf.dispose([moving, fixed]);
    net.dispose();
  });
});

describe('INNReg', () => {
  beforeAll(async () => {
    await useBackend('wasm');
  });

  it('has the paper translator (8 DDWConv coupling blocks) and the residual U-Net by default', () => {
    const model = createInnreg({ ndim: 2 });
    expect(model.translator.couplings.length).toBe(8);
    expect(model.lossWeights).toEqual({ recon: 1, nmi: 1, inn: 0.1, smooth: 10, inverseRecon: 0 });
    expect(model.barrier).toBe(5);
    const R = model.registration;
    expect(R.encoderFeatures).toEqual([16, 32, 32, 64]);
    expect(R.decoderFeatures).toEqual([64, 32, 32, 32, 16]);
    const conv = (ci: number, co: number, k = 3) => k * k * ci * co + co;
    const block = (ci: number, co: number) =>
      conv(ci, co) + conv(co, co) + (ci === co ? 0 : conv(ci, co, 1));
    const expectedR =
      block(2, 16) +
      block(16, 32) +
      block(32, 32) +
      block(32, 64) +
      conv(64, 64) +
      conv(128, 32) +
      conv(64, 32) +
      conv(64, 32) +
      block(48, 16) +
      conv(16, 2);
    expect(R.parameterCount).toBe(expectedR);
    expect(model.parameterCount).toBe(model.translator.parameterCount + expectedR);
    const paths = model.namedVariables().map(([p]) => p);
    expect(paths.every((p) => p.startsWith('translator/') || p.startsWith('registration/'))).toBe(
      true,
    );
    expect(paths).toContain('translator/block8/H/attention/bases');
    expect(paths).toContain('registration/out0/skip/kernel');
    model.dispose();
  });

  it('trainInnreg on a synthetic multi-modal pair lowers the loss, aligns it, keeps the tensor count flat', async () => {
    const model = createInnreg(small({ seed: 1 }));
    const error = () =>
      tf.tidy(() => {
        const p = modalPair();
        const out = model.apply(p.moving, p.fixed);
        return scalar(tf.mean(tf.abs(tf.sub(out.warped, tf.sub(1, p.fixed)))));
      });
    const before = error();
    const counts: number[] = [];
    const losses: number[] = [];
    const terms: number[] = [];
    const result = await trainInnreg({
      model,
      data: () => modalPair(),
      epochs: 5,
      stepsPerEpoch: 8,
      learningRate: 1e-2,
      onProgress: (p) => {
        counts.push(tf.memory().numTensors);
        losses.push(p.loss);
        const t = p.terms;
        terms.push(t.recon + t.nmi + 0.1 * t.inn + 10 * t.smooth);
        expect(p.similarity + p.regularisation).toBeCloseTo(p.loss, 2);
        expect(p.regularisation).toBeCloseTo(10 * t.smooth, 4);
      },
    });
    expect(result.history.length).toBe(5);
    // Adam's moments are created in the first step; after that the count never changes
    expect(new Set(counts.slice(1)).size).toBe(1);
    for (let i = 0; i < losses.length; i++) {
      expect(Math.abs(terms[i]! - losses[i]!)).toBeLessThan(1e-4 * Math.abs(losses[i]!) + 1e-4);
    }
    const first = losses.slice(0, 3).reduce((s, v) => s + v, 0) / 3;
    const last = losses.slice(-3).reduce((s, v) => s + v, 0) / 3;
    expect(last).toBeLessThan(0.5 * first);
    expect(error()).toBeLessThan(0.6 * before);
    model.dispose();
  });

  it('trainInnreg checkpoints: a run resumed from epoch 2 ends with the weights of an uninterrupted one', async () => {
    const dir = join(tmp, 'ckpt');
    const options = small({
      translator: {
        blocks: 1,
        subnet: ddwDenseBlockSubnet({ growth: 4, attention: { kernelSize: 3 } }),
      },
      registration: { encoder: [4, 8], decoder: [8, 8, 4] },
      seed: 6,
    });
    const data = (epoch: number, step: number) =>
      tf.tidy(() => ({
        moving: tf.add(tf.mul(blob(16, 8, 6 + ((epoch + step) % 3), 3), 0.9), 0.05),
        fixed: tf.sub(0.95, tf.mul(blob(16, 8, 9, 3), 0.9)),
      }));
    const common = { data, stepsPerEpoch: 2, learningRate: 1e-2, loss: { nmi: 'plain' as const } };
    const straight = createInnreg(options);
    await trainInnreg({ model: straight, epochs: 3, ...common });
    const resumed = createInnreg(options);
    await trainInnreg({ model: resumed, epochs: 2, ...common, checkpointDir: dir });
    resumed.dispose();
    const again = createInnreg(options);
    const result = await trainInnreg({ model: again, epochs: 3, ...common, checkpointDir: dir });
    expect(result.resumedFromEpoch).toBe(2);
    const a = straight.getWeights();
    const b = again.getWeights();
    for (const k of Object.keys(a)) expect(maxAbs(tf.sub(a[k]!, b[k]!)), k).toBeLessThan(1e-6);
    tf.dispose([...Object.values(a), ...Object.values(b)]);
    straight.dispose();
    again.dispose();
  });

  it('trainInnreg stops on a non-finite loss before updating', async () => {
    const model = createInnreg(small({ seed: 2 }));
    const before = model.getWeights();
    await expect(
      trainInnreg({
        model,
        epochs: 1,
        data: () => ({
          moving: tf.fill([1, 16, 16, 1], Number.NaN),
          fixed: tf.ones([1, 16, 16, 1]),
        }),
      }),
    ).rejects.toThrow(TrainingDivergedError);
    const after = model.getWeights();
    for (const [p, t] of Object.entries(before)) expect(maxAbs(tf.sub(t, after[p]!)), p).toBe(0);
    tf.dispose([...Object.values(before), ...Object.values(after)]);
    model.dispose();
  });

  it('round-trips its weights through saveWeights/loadWeights and loadRegistrationNetwork', async () => {
    const options = { ndim: 2 as const, translator: { blocks: 2 }, seed: 8 };
    const model = createInnreg(options);
    // move every weight off its initial value, so the round trip is not trivially true
    tf.tidy(() => {
      for (const v of model.trainableVariables) {
        v.assign(tf.add(v, tf.randomNormal(v.shape, 0, 0.01, 'float32', 5)));
      }
    });
    const other = createInnreg({ ...options, seed: 9 });
    const { moving, fixed } = modalPair(32);
    await saveWeights(model, join(tmp, 'weights'), { options });
    expect(await loadWeights(other, join(tmp, 'weights'))).toEqual({ options });
    await saveRegistrationNetwork(join(tmp, 'net'), model, {
      method: 'innreg',
      options: { ...options },
      inputShape: [32, 32],
    });
    const net = await loadRegistrationNetwork(join(tmp, 'net'));
    tf.tidy(() => {
      const a = model.apply(moving, fixed);
      expect(maxAbs(a.forward)).toBeGreaterThan(1e-3);
      expect(other.apply(moving, fixed).forward.arraySync()).toEqual(a.forward.arraySync());
      expect(other.translate(moving).arraySync()).toEqual(model.translate(moving).arraySync());
      expect(net.predict(moving, fixed).forward.arraySync()).toEqual(a.forward.arraySync());
    });
    const mismatch = createInnreg({ ...options, translator: { blocks: 3 } });
    await expect(loadWeights(mismatch, join(tmp, 'weights'))).rejects.toThrow(
      /translator\/block3\/invconv\/permutation' \[4, 4\] is missing/,
    );
    tf.dispose([moving, fixed]);
    for (const m of [model, other, mismatch]) m.dispose();
    net.dispose();
  });

  it('explains bad options and input', () => {
    expect(() => createInnreg({ ndim: 4 as 2 })).toThrow(
      /createInnreg\(\): 'ndim' must be 2 or 3, got 4/,
    );
    expect(() => createInnreg({ ndim: 2, weights: { smooth: -1 } })).toThrow(
      /'weights.smooth' must be a finite number ≥ 0, got -1/,
    );
    expect(() => createInnreg({ ndim: 2, weights: { ncc: 1 } as never })).toThrow(
      /unknown loss weight 'ncc'/,
    );
    expect(() => createInnreg({ ndim: 2, barrier: Number.NaN })).toThrow(
      /'barrier' must be finite/,
    );
    expect(() => createInnregRegistrationNet({ ndim: 2, decoder: [8, 8, 8, 8] })).toThrow(
      /'decoder' must list at least 5 positive integers/,
    );
    expect(() => createInnregRegistrationNet({ ndim: 2, flowInitStd: -1 })).toThrow(
      /'flowInitStd' must be a finite number ≥ 0/,
    );
    const model = createInnreg(small());
    expect(() => model.apply(tf.zeros([1, 18, 16, 1]), tf.zeros([1, 18, 16, 1]))).toThrow(
      /spatial sizes of \[1, 18, 16, 1\] must be divisible by 2\^2 = 4/,
    );
    expect(() => model.apply(tf.zeros([1, 16, 16, 1]), tf.zeros([1, 16, 32, 1]))).toThrow(
      /same shape/,
    );
    expect(() => model.loss(tf.zeros([1, 16, 16, 2]), tf.zeros([1, 16, 16, 2]))).toThrow(
      /Innreg.loss\(\): 'x' \[1, 16, 16, 2\] must be a 2D image with 1 channel/,
    );
    expect(() =>
      model.loss(tf.zeros([1, 16, 16, 1]), tf.zeros([1, 16, 16, 1]), { nmi: 'mi' as never }),
    ).toThrow(/'nmi' must be 'barrier' or 'plain', got "mi"/);
    model.dispose();
  });
});
