import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { affineField, composeFields, identityGrid, tf, warp } from '@regkit/core';
import { localNccLoss, MineEstimator, mseLoss } from '@regkit/losses';
import { inverseConsistencyError } from '@regkit/metrics';
import {
  createFire,
  createMasrNet,
  createVoxelMorph,
  type Fire,
  FireConvBlock,
  type FireOptions,
  FireResidualBlock,
  fireLoss,
  fireParameterGroups,
  fireSmoothWeight,
  instanceNorm,
  laplacianEnergy,
  loadRegistrationNetwork,
  saveRegistrationNetwork,
  trainFire,
  trainRegistration,
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

interface LayerFixture {
  weights?: Record<string, ArrayFixture>;
  input: ArrayFixture;
  output: ArrayFixture;
}

interface FireCase {
  ndim: 2 | 3;
  spatial: number[];
  widthChannels: [number, number, number];
  residualBlocks: number;
  nonRigidChannels: number;
  maxDisplacement: number;
  affineChannels: [number, number, number];
  affineHidden: number;
  weights: Record<string, ArrayFixture>;
  inputs: { moving: ArrayFixture; fixed: ArrayFixture };
  outputs: Record<
    | 'encoderMoving'
    | 'theta'
    | 'voxelAffine'
    | 'nonRigidNormalised'
    | 'nonRigid'
    | 'forward'
    | 'synthesis',
    ArrayFixture
  >;
}

interface LossFixture extends Omit<FireCase, 'outputs'> {
  terms: Record<string, number>;
  loss: number;
  gradients: Record<string, ArrayFixture>;
}

const fixtures = JSON.parse(
  readFileSync(new URL('./fixtures/fire_fixtures.json', import.meta.url), 'utf8'),
) as { layers: Record<string, LayerFixture>; cases: FireCase[]; loss: LossFixture };

const tmp = mkdtempSync(join(tmpdir(), 'regkit-fire-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function weightsOf(w: Record<string, ArrayFixture>): Record<string, tf.Tensor> {
  return Object.fromEntries(Object.entries(w).map(([k, v]) => [k, tensorOf(v)]));
}

/** A tiny FIRE for fast tests (16×16 or 8×8×8 inputs). */
const TINY: Omit<FireOptions, 'ndim'> = {
  encoderChannels: [2, 3, 4],
  residualBlocks: 1,
  nonRigidChannels: 2,
  affineChannels: [2, 3, 3],
  affineHidden: 4,
  maxDisplacement: 0.3,
};

function blob(shape: number[], centre: number[], r: number, seed = 0): tf.Tensor {
  return tf.tidy(() => {
    const g = identityGrid(shape);
    const d = tf.sum(tf.square(tf.sub(g, tf.tensor1d(centre))), -1, true);
    const noise = tf.randomUniform([1, ...shape, 1], 0, 0.05, 'float32', seed);
    return tf.add(tf.exp(tf.div(tf.neg(d), 2 * r * r)), noise);
  });
}

describe.each(BACKENDS)('FIRE against the PyTorch port on %s', (backend) => {
  beforeAll(async () => {
    await useBackend(backend);
  });

  it('instance norm (2D, 3D) equals F.instance_norm', () => {
    for (const key of ['instanceNorm2d', 'instanceNorm3d']) {
      const f = fixtures.layers[key]!;
      const x = tensorOf(f.input);
      const y = instanceNorm(x);
      expectClose(y, f.output, 1e-4, 1e-5);
      tf.dispose([x, y]);
    }
  });

  it('a 7×7 conv block and residual blocks (2D, 3D) equal the torch layers', () => {
    const cases: Array<[string, FireConvBlock | FireResidualBlock]> = [
      ['convBlock7', new FireConvBlock(2, 2, 4, { kernelSize: 7, seed: 0 })],
      ['residualBlock', new FireResidualBlock(2, 3, 0)],
      ['residualBlock3d', new FireResidualBlock(3, 2, 0)],
    ];
    for (const [key, layer] of cases) {
      const f = fixtures.layers[key]!;
      const w = weightsOf(f.weights!);
      layer.setWeights(w);
      const x = tensorOf(f.input);
      const y = layer.apply(x);
      expectClose(y, f.output, 1e-4, 1e-4);
      tf.dispose([x, y, ...Object.values(w)]);
      layer.dispose();
    }
  });

  for (const c of fixtures.cases) {
    it(`${c.ndim}D ${c.spatial.join('×')}: encoder, affine head, non-rigid field, φ and synthesis equal the port`, () => {
      const model = createFire({
        ndim: c.ndim,
        encoderChannels: c.widthChannels,
        residualBlocks: c.residualBlocks,
        nonRigidChannels: c.nonRigidChannels,
        maxDisplacement: c.maxDisplacement,
        affineChannels: c.affineChannels,
        affineHidden: c.affineHidden,
      });
      const w = weightsOf(c.weights);
      model.setWeights(w, false);
      const before = tf.memory().numTensors;
      const moving = tensorOf(c.inputs.moving);
      const fixed = tensorOf(c.inputs.fixed);
      const gA = model.encoder.apply(moving);
      const gB = model.encoder.apply(fixed);
      expectClose(gA, c.outputs.encoderMoving, 2e-4, 1e-4);
      const t = model.transform(model.transformAB, gA, gB, c.spatial);
      expectClose(t.theta, c.outputs.theta, 1e-5, 1e-4);
      expectClose(t.affineVoxel, c.outputs.voxelAffine, 1e-4, 1e-4);
      expectClose(t.nonRigidNormalised, c.outputs.nonRigidNormalised, 1e-5, 1e-3);
      expectClose(t.nonRigidImage, c.outputs.nonRigid, 1e-4, 1e-3);
      expectClose(t.composedImage, c.outputs.forward, 1e-4, 1e-4);
      const out = model.apply(moving, fixed);
      expectClose(out.forward, c.outputs.forward, 1e-4, 1e-4);
      expectClose(out.affine, c.outputs.voxelAffine, 1e-4, 1e-4);
      const synth = model.synthesise(moving, 'AB');
      expectClose(synth, c.outputs.synthesis, 1e-4, 1e-4);
      tf.dispose([gA, gB, ...Object.values(t), ...Object.values(out), synth, moving, fixed]);
      expect(tf.memory().numTensors).toBe(before);
      tf.dispose(Object.values(w));
      model.dispose();
    });
  }
});

describe.each(BACKENDS)('FIRE loss and gradients against PyTorch autograd on %s', (backend) => {
  beforeAll(async () => {
    await useBackend(backend);
  });

  it('every term of Eqs. 2–13, the loss and d loss / d weight for every weight', () => {
    const c = fixtures.loss;
    const model = createFire({
      ndim: c.ndim,
      encoderChannels: c.widthChannels,
      residualBlocks: c.residualBlocks,
      nonRigidChannels: c.nonRigidChannels,
      maxDisplacement: c.maxDisplacement,
      affineChannels: c.affineChannels,
      affineHidden: c.affineHidden,
    });
    const w = weightsOf(c.weights);
    model.setWeights(w);
    tf.dispose(Object.values(w));
    const moving = tensorOf(c.inputs.moving);
    const fixed = tensorOf(c.inputs.fixed);
    const t = fireLoss(model, moving, fixed);
    for (const [k, v] of Object.entries(c.terms)) {
      const got = (t.terms as unknown as Record<string, tf.Scalar>)[k]!.dataSync()[0]!;
      expect(Math.abs(got - v), `${k}: ${got} vs ${v}`).toBeLessThanOrEqual(
        1e-4 * Math.abs(v) + 1e-5,
      );
    }
    expect(t.loss.dataSync()[0]).toBeCloseTo(c.loss, 3);
    tf.dispose([t.loss, t.similarity, t.regularisation, ...Object.values(t.terms)]);
    const named = new Map(model.namedVariables());
    const vars = [...named.values()];
    const { value, grads } = tf.variableGrads(() => fireLoss(model, moving, fixed).loss, vars);
    let checked = 0;
    for (const [path, g] of Object.entries(c.gradients)) {
      const v = named.get(path)!;
      expectClose(grads[v.name]!, g, 1e-4, 2e-3);
      checked++;
    }
    expect(checked).toBe(vars.length);
    tf.dispose([value, ...Object.values(grads), moving, fixed]);
    model.dispose();
  });
});

describe('FIRE properties (cpu)', () => {
  beforeAll(async () => {
    await useBackend('cpu');
  });

  it('the affine heads start at the identity: [I | 0], φ_af = id, both directions', () => {
    for (const ndim of [2, 3] as const) {
      const shape = ndim === 2 ? [16, 20] : [12, 12, 16];
      const model = createFire({ ndim, ...TINY, seed: 3 });
      const m = tf.randomUniform([1, ...shape, 1], 0, 1, 'float32', 1);
      const f = tf.randomUniform([1, ...shape, 1], 0, 1, 'float32', 2);
      const out = model.apply(m, f);
      const eye = Array.from({ length: ndim }, (_, i) =>
        Array.from({ length: ndim + 1 }, (_, j) => (i === j ? 1 : 0)),
      );
      expect(out.affine.arraySync()).toEqual([eye]);
      const gA = model.encoder.apply(m);
      const gB = model.encoder.apply(f);
      const back = model.transform(model.transformBA, gB, gA, shape);
      expect(back.theta.arraySync()).toEqual([eye]);
      expect(tf.max(tf.abs(back.affineImage)).dataSync()[0]).toBe(0);
      tf.dispose([m, f, gA, gB, ...Object.values(out), ...Object.values(back)]);
      model.dispose();
    }
  });

  it("φ = φ_af ∘ φ_nr equals core's composeFields(affine field, non-rigid field) inside the grid", () => {
    const model = createFire({ ndim: 2, ...TINY, maxDisplacement: 0.5, seed: 4 });
    // a non-identity affine and a clearly non-zero non-rigid field
    const head = model.transformAB.affine.dense2;
    head.bias!.assign(tf.tensor1d([1.05, 0.08, 0.03, -0.06, 0.97, -0.02]));
    const flow = model.transformAB.nonRigid.flow;
    flow.kernel.assign(tf.randomUniform(flow.kernel.shape, -0.3, 0.3, 'float32', 9));
    const shape = [16, 20];
    const m = blob(shape, [7, 9], 3, 1);
    const f = blob(shape, [8, 10], 3, 2);
    const out = model.apply(m, f);
    const explicit = composeFields(affineField(out.affine, shape), out.nonRigid);
    // border padding of composeFields differs from the exact affine where x + u_nr leaves the grid
    const inside = tf.tidy(() => {
      const p = tf.add(identityGrid(shape), out.nonRigid);
      const lo = tf.all(tf.greaterEqual(p, 0), -1);
      const hi = tf.all(tf.lessEqual(p, tf.tensor1d(shape.map((s) => s - 1))), -1);
      return tf.cast(tf.logicalAnd(lo, hi), 'float32');
    });
    const err = tf.tidy(() =>
      tf.max(tf.mul(tf.max(tf.abs(tf.sub(out.forward, explicit)), -1), inside)),
    );
    expect(tf.max(tf.abs(out.nonRigid)).dataSync()[0]).toBeGreaterThan(0.5);
    expect(tf.sum(inside).dataSync()[0]).toBeGreaterThan(0.8 * 16 * 20);
    expect(err.dataSync()[0]).toBeLessThan(1e-4);
    tf.dispose([m, f, explicit, inside, err, ...Object.values(out)]);
    model.dispose();
  });

  it('inverse consistency (metrics): mutually inverse affine heads give ≈ 0, others do not; Eq. 8 follows', async () => {
    const model = createFire({ ndim: 2, ...TINY, seed: 5 });
    for (const t of [model.transformAB, model.transformBA]) {
      t.nonRigid.flow.kernel.assign(tf.zerosLike(t.nonRigid.flow.kernel));
    }
    const shape = [16, 16];
    const m = blob(shape, [7, 8], 3, 1);
    const f = blob(shape, [8, 8], 3, 2);
    // normalised affine a(p) = A p + t and its inverse A⁻¹(p − t)
    const A = [
      [1.1, 0.1],
      [-0.05, 0.95],
    ];
    const t = [0.04, -0.03];
    const det = A[0]![0]! * A[1]![1]! - A[0]![1]! * A[1]![0]!;
    const Ai = [
      [A[1]![1]! / det, -A[0]![1]! / det],
      [-A[1]![0]! / det, A[0]![0]! / det],
    ];
    const ti = [
      -(Ai[0]![0]! * t[0]! + Ai[0]![1]! * t[1]!),
      -(Ai[1]![0]! * t[0]! + Ai[1]![1]! * t[1]!),
    ];
    const set = (net: Fire['transformAB'], a: number[][], b: number[]) =>
      net.affine.dense2.bias!.assign(
        tf.tensor1d([a[0]![0]!, a[0]![1]!, b[0]!, a[1]![0]!, a[1]![1]!, b[1]!]),
      );
    set(model.transformAB, A, t);
    set(model.transformBA, Ai, ti);
    const out = model.apply(m, f);
    const good = await inverseConsistencyError(out.forward, out.inverse);
    const termGood = fireLoss(model, m, f).terms.inverseConsistency.dataSync()[0]!;
    set(model.transformBA, A, t); // the same map both ways: not inverses
    const out2 = model.apply(m, f);
    const bad = await inverseConsistencyError(out2.forward, out2.inverse);
    const termBad = fireLoss(model, m, f).terms.inverseConsistency.dataSync()[0]!;
    expect(good.mean).toBeLessThan(0.05);
    expect(bad.mean).toBeGreaterThan(0.5);
    expect(termBad).toBeGreaterThan(3 * termGood);
    tf.dispose([m, f, ...Object.values(out), ...Object.values(out2)]);
    model.dispose();
  });

  it('the Laplacian energy of u = a·x₀² is (2a)² per interior point; λ = 2^{2n}/(10N)', () => {
    const shape = [6, 7];
    const a = 0.3;
    const u = tf.tidy(() => {
      const g = identityGrid(shape);
      const x0 = tf.slice(g, [0, 0, 0, 0], [1, 6, 7, 1]);
      return tf.concat([tf.mul(tf.square(x0), a), tf.zerosLike(x0)], -1);
    });
    const e = laplacianEnergy(u);
    expect(e.dataSync()[0]).toBeCloseTo((2 * a) ** 2 * 4 * 5, 4);
    expect(fireSmoothWeight([96, 96])).toBeCloseTo(16 / (10 * 96 * 96), 12);
    expect(fireSmoothWeight([32, 32, 32])).toBeCloseTo(64 / (10 * 32768), 12);
    tf.dispose([u, e]);
  });

  it('finite differences: the FIRE loss along random directions of the affine head, the flow layer and a decoder', () => {
    const model = createFire({ ndim: 2, ...TINY, seed: 6 });
    // off the identity, so no sample falls exactly on a grid point (linear interpolation kinks)
    model.transformAB.affine.dense2.bias!.assign(
      tf.tensor1d([1.02, 0.013, 0.017, -0.011, 0.985, -0.021]),
    );
    model.transformBA.affine.dense2.bias!.assign(
      tf.tensor1d([0.98, -0.012, -0.015, 0.014, 1.015, 0.019]),
    );
    const shape = [16, 16];
    const m = blob(shape, [7, 8], 3, 1);
    const f = blob(shape, [8, 9], 3, 2);
    const loss = () => fireLoss(model, m, f).loss;
    // (the ReLUs after instance norms of 2–4 channels make the loss too kinked in the encoder
    // weights for float32 differences; the torch autograd fixture checks those)
    const vars = [
      model.transformAB.affine.dense2.bias!,
      model.transformBA.nonRigid.flow.kernel,
      model.decoderAB.out.kernel,
    ];
    for (const v of vars) {
      const { analytic, numeric } = directionalDerivative(loss, v, 3e-4);
      expect(Math.abs(analytic - numeric), `${analytic} vs ${numeric}`).toBeLessThanOrEqual(
        0.02 * Math.abs(analytic) + 2e-3,
      );
    }
    // the smooth pieces on their own
    const u = tf.variable(tf.randomUniform([1, 7, 8, 2], -1, 1, 'float32', 4));
    const lap = directionalDerivative(() => laplacianEnergy(u), u, 1e-2);
    expect(lap.analytic).toBeCloseTo(lap.numeric, 2);
    const x = tf.variable(tf.randomUniform([1, 6, 7, 3], -1, 1, 'float32', 5));
    const w = tf.randomUniform([1, 6, 7, 3], -1, 1, 'float32', 6);
    const norm = directionalDerivative(
      () => tf.sum(tf.mul(instanceNorm(x), w)) as tf.Scalar,
      x,
      1e-3,
    );
    expect(norm.analytic).toBeCloseTo(norm.numeric, 2);
    tf.dispose([m, f, u, x, w]);
    model.dispose();
  });

  it('a given similarity replaces the registration accuracy term by S(x^B, x^A∘φ) + S(x^A, x^B∘φ⁻)', () => {
    const model = createFire({ ndim: 2, ...TINY, seed: 7 });
    model.transformAB.affine.dense2.bias!.assign(tf.tensor1d([1.05, 0, 0.05, 0, 0.95, 0]));
    const shape = [16, 16];
    const m = blob(shape, [7, 8], 3, 1);
    const f = blob(shape, [8, 9], 3, 2);
    const sim = (a: tf.Tensor, b: tf.Tensor) => tf.mean(tf.abs(tf.sub(a, b))) as tf.Scalar;
    const t = fireLoss(model, m, f, { similarity: sim, similarityWeight: 2 });
    const out = model.apply(m, f);
    const expected = tf.tidy(
      () => tf.add(sim(f, warp(m, out.forward)), sim(m, warp(f, out.inverse))).dataSync()[0]!,
    );
    expect(t.terms.registrationAccuracy.dataSync()[0]).toBeCloseTo(expected, 5);
    expect(t.similarity.dataSync()[0]).toBeCloseTo(2 * expected, 5);
    const plain = fireLoss(model, m, f);
    expect(plain.terms.registrationAccuracy.dataSync()[0]).not.toBeCloseTo(expected, 3);
    // every other term is unchanged by the option
    expect(plain.terms.cycle.dataSync()[0]).toBe(t.terms.cycle.dataSync()[0]);
    tf.dispose([m, f, ...Object.values(out), t.loss, t.similarity, t.regularisation]);
    tf.dispose([...Object.values(t.terms), ...Object.values(plain.terms), plain.loss]);
    model.dispose();
  });

  it('trainFire: one Adam per group, each first step moves its weights by its own rate; flat memory', async () => {
    const model = createFire({ ndim: 2, ...TINY, seed: 8 });
    const before = model.getWeights();
    const shape = [16, 16];
    const data = (_e: number, s: number) => ({
      moving: blob(shape, [7 + (s % 2), 8], 3, s),
      fixed: blob(shape, [8, 9], 3, 100 + s),
    });
    const counts: number[] = [];
    await trainFire({
      model,
      data,
      epochs: 1,
      stepsPerEpoch: 1,
      learningRates: { affine: 1e-5, nonRigid: 5e-5, synthesis: 1e-4 },
    });
    const after = model.getWeights();
    const maxStep = (prefix: string) =>
      Math.max(
        ...Object.keys(after)
          .filter((k) => k.startsWith(prefix))
          .map((k) => tf.tidy(() => tf.max(tf.abs(tf.sub(after[k]!, before[k]!))).dataSync()[0]!)),
      );
    // Adam's first step is lr · g/(|g| + ε): ±lr wherever the gradient is not tiny
    expect(maxStep('transformAB/affine/')).toBeCloseTo(1e-5, 6);
    expect(maxStep('transformBA/nonRigid/')).toBeCloseTo(5e-5, 6);
    expect(maxStep('encoder/')).toBeCloseTo(1e-4, 5);
    expect(maxStep('decoderBA/')).toBeCloseTo(1e-4, 5);
    tf.dispose([...Object.values(before), ...Object.values(after)]);
    // two epochs: the tensor count is the same after each
    await trainFire({
      model,
      data,
      epochs: 3,
      stepsPerEpoch: 1,
      similarity: (fx, w) => localNccLoss(fx, w, { window: 5 }),
      onProgress: () => counts.push(tf.memory().numTensors),
    });
    expect(new Set(counts).size, `${counts}`).toBe(1);
    model.dispose();
  });

  it('mixing: trainFire with MINE-local (trained with FIRE) and with DNS features (a frozen MASR-Net) in place of RMS', async () => {
    const shape = [16, 16];
    const data = (_e: number, s: number) => ({
      moving: blob(shape, [7 + (s % 2), 8], 3, s),
      fixed: blob(shape, [8, 9], 3, 100 + s),
    });
    const changed = (a: tf.NamedTensorMap, b: tf.NamedTensorMap, prefix: string) =>
      Object.keys(a)
        .filter((k) => k.startsWith(prefix))
        .some((k) => tf.tidy(() => tf.max(tf.abs(tf.sub(a[k]!, b[k]!))).dataSync()[0]!) > 0);
    // MINE-local: a SimilarityModule, whose statistics network the trainer optimises too
    const fire = createFire({ ndim: 2, ...TINY, seed: 11 });
    const mine = new MineEstimator({ shuffle: 'local', channelsA: 1, channelsB: 1, seed: 3 });
    const [fire0, mine0] = [fire.getWeights(), mine.getWeights()];
    const mineResult = await trainFire({
      model: fire,
      similarity: mine,
      data,
      epochs: 1,
      stepsPerEpoch: 2,
      learningRates: { affine: 1e-3, nonRigid: 1e-3, synthesis: 1e-3 },
    });
    expect(mineResult.history.every(Number.isFinite)).toBe(true);
    const [fire1, mine1] = [fire.getWeights(), mine.getWeights()];
    for (const sub of ['encoder/', 'transformAB/affine/', 'transformBA/nonRigid/']) {
      expect(changed(fire0, fire1, sub), sub).toBe(true);
    }
    expect(changed(mine0, mine1, ''), 'MINE statistics network').toBe(true);
    tf.dispose([...Object.values(fire0), ...Object.values(fire1)]);
    tf.dispose([...Object.values(mine0), ...Object.values(mine1)]);
    mine.dispose();

    // DNS features: a MASR-Net feature extractor inside a plain Similarity (not trained)
    const masr = createMasrNet({
      ndim: 2,
      widths: [4, 4, 4, 4],
      hiddenChannels: 4,
      featureChannels: 4,
      seed: 2,
    });
    const dns = (a: tf.Tensor, b: tf.Tensor) =>
      tf.tidy(() => mseLoss(masr.apply(a), masr.apply(b)) as tf.Scalar);
    const m = blob(shape, [7, 8], 3, 1);
    const f = blob(shape, [8, 9], 3, 2);
    const t = fireLoss(fire, m, f, { similarity: dns });
    const o = fire.apply(m, f);
    const expected = tf.tidy(
      () => tf.add(dns(f, warp(m, o.forward)), dns(m, warp(f, o.inverse))).dataSync()[0]!,
    );
    expect(t.terms.registrationAccuracy.dataSync()[0]).toBeCloseTo(expected, 5);
    tf.dispose([m, f, ...Object.values(o), t.loss, t.similarity, t.regularisation]);
    tf.dispose(Object.values(t.terms));
    const [fire2, masr0] = [fire.getWeights(), masr.getWeights()];
    await trainFire({ model: fire, similarity: dns, data, epochs: 1, stepsPerEpoch: 2 });
    const [fire3, masr1] = [fire.getWeights(), masr.getWeights()];
    expect(changed(fire2, fire3, 'transformAB/nonRigid/')).toBe(true);
    expect(changed(masr0, masr1, ''), 'a frozen feature extractor stays as it is').toBe(false);
    tf.dispose([...Object.values(fire2), ...Object.values(fire3)]);
    tf.dispose([...Object.values(masr0), ...Object.values(masr1)]);
    masr.dispose();
    fire.dispose();
  });

  it('3D: one training step of the whole loss is finite and changes every subnet', async () => {
    const model = createFire({ ndim: 3, ...TINY, seed: 10 });
    const before = model.getWeights();
    const shape = [12, 12, 16];
    const losses: number[] = [];
    await trainFire({
      model,
      data: () => ({ moving: blob(shape, [5, 6, 7], 3, 1), fixed: blob(shape, [6, 6, 8], 3, 2) }),
      epochs: 1,
      stepsPerEpoch: 1,
      onProgress: (p) => losses.push(p.loss),
    });
    expect(Number.isFinite(losses[0])).toBe(true);
    const after = model.getWeights();
    for (const prefix of [
      'encoder/',
      'decoderAB/',
      'decoderBA/',
      'transformAB/affine/',
      'transformBA/nonRigid/',
    ]) {
      const changed = Object.keys(after).some(
        (k) =>
          k.startsWith(prefix) &&
          tf.tidy(() => tf.any(tf.notEqual(after[k]!, before[k]!)).dataSync()[0]) === 1,
      );
      expect(changed, prefix).toBe(true);
    }
    tf.dispose([...Object.values(before), ...Object.values(after)]);
    model.dispose();
  });

  it('saves and reloads through saveRegistrationNetwork / loadRegistrationNetwork (method fire)', async () => {
    const options = { ndim: 2 as const, ...TINY, seed: 9 };
    const model = createFire(options);
    model.transformAB.affine.dense2.bias!.assign(tf.tensor1d([1.05, 0, 0.05, 0, 0.95, 0]));
    const dir = join(tmp, 'fire');
    await saveRegistrationNetwork(dir, model, { method: 'fire', options, inputShape: [16, 16] });
    const net = await loadRegistrationNetwork(dir);
    const m = blob([16, 16], [7, 8], 3, 1);
    const f = blob([16, 16], [8, 9], 3, 2);
    const a = model.apply(m, f);
    const b = net.predict(m, f);
    expect(tf.max(tf.abs(tf.sub(a.forward, b.forward))).dataSync()[0]).toBe(0);
    expect(tf.max(tf.abs(tf.sub(a.inverse, b.inverse!))).dataSync()[0]).toBe(0);
    tf.dispose([m, f, ...Object.values(a), b.forward, b.inverse!]);
    net.dispose();
    model.dispose();
  });

  it('refuses bad inputs and options with clear messages', () => {
    expect(() => createFire({ ndim: 4 as 2 })).toThrow(/'ndim' must be 2 or 3/);
    expect(() => createFire({ ndim: 2, width: 0 })).toThrow(/'width' must be > 0/);
    expect(() => createFire({ ndim: 2, affineChannels: [1, 2] as never })).toThrow(
      /'affineChannels' must be 3 positive integers/,
    );
    const model = createFire({ ndim: 2, ...TINY });
    const odd = tf.zeros([1, 18, 16, 1]);
    expect(() => model.apply(odd, odd)).toThrow(/multiple of 4/);
    const three = tf.zeros([1, 12, 12, 12, 1]);
    expect(() => model.apply(three, three)).toThrow(/registers 2D images/);
    tf.dispose([odd, three]);
    model.dispose();
  });
});

describe('trainRegistration parameter groups (cpu)', () => {
  beforeAll(async () => {
    await useBackend('cpu');
  });
  const data = () => ({
    moving: tf.randomUniform([1, 16, 16, 1], 0, 1, 'float32', 1),
    fixed: tf.randomUniform([1, 16, 16, 1], 0, 1, 'float32', 2),
  });
  const similarity = (f: tf.Tensor, w: tf.Tensor) => localNccLoss(f, w, { window: 5 });

  it('refuses a group that claims nothing, duplicate names and bad rates', async () => {
    const model = createVoxelMorph({ ndim: 2, encoder: [4, 8], decoder: [8, 8, 4] });
    const run = (parameterGroups: never) =>
      trainRegistration({ model, data, epochs: 1, similarity, parameterGroups });
    await expect(
      run([{ name: 'x', learningRate: 1e-3, paths: ['model/nothing/'] }] as never),
    ).rejects.toThrow(/parameter group 'x' claims no trainable variable/);
    await expect(
      run([
        { name: 'a', learningRate: 1e-3, paths: ['model/flow/'] },
        { name: 'a', learningRate: 1e-3, paths: ['model/unet/'] },
      ] as never),
    ).rejects.toThrow(/unique non-empty name/);
    await expect(run([{ name: 'a', learningRate: 0, paths: ['model/'] }] as never)).rejects.toThrow(
      /'learningRate' must be > 0/,
    );
    model.dispose();
  });

  it('a checkpoint written with other groups is refused on resume', async () => {
    const dir = join(tmp, 'groups-ckpt');
    const model = createVoxelMorph({ ndim: 2, encoder: [4, 8], decoder: [8, 8, 4] });
    await trainRegistration({ model, data, epochs: 1, similarity, checkpointDir: dir });
    await expect(
      trainRegistration({
        model,
        data,
        epochs: 2,
        similarity,
        checkpointDir: dir,
        parameterGroups: [{ name: 'flow', learningRate: 1e-3, paths: ['model/flow/'] }],
      }),
    ).rejects.toThrow(/other parameter groups/);
    model.dispose();
  });

  it('FIRE groups claim the affine and non-rigid subnets, the rest is synthesis', () => {
    const groups = fireParameterGroups();
    expect(groups.map((g) => [g.name, g.learningRate])).toEqual([
      ['affine', 1e-5],
      ['nonRigid', 5e-5],
    ]);
  });
});
