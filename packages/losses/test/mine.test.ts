/**
 * MINE (MineEstimator, mineLoss): convergence to the closed-form MI of correlated Gaussians
 * (I = −½ ln(1 − ρ²) nats), with and without the moving-average bias correction; the
 * marginal pairings (global permutations, local offsets within ±N); finite-difference
 * gradients for a fixed pairing; the bias-corrected gradient; flat tf.memory(); errors.
 * Training runs on the cpu backend; one forward/gradient check compares wasm with cpu.
 */
import { initBackend, mulberry32, RegkitError, tf } from '@regkit/core';
import { MineEstimator, mineLoss } from '@regkit/losses';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkGradient } from './helpers.js';

/** Images `[1, side, side, 1]` whose voxel pairs are i.i.d. standard normal with correlation ρ. */
function gaussianPair(rho: number, side: number, seed: number): [tf.Tensor4D, tf.Tensor4D] {
  const rand = mulberry32(seed);
  const normal = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
  const n = side * side;
  const x = new Float32Array(n);
  const y = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    x[i] = normal();
    y[i] = rho * x[i]! + Math.sqrt(1 - rho * rho) * normal();
  }
  return [tf.tensor4d(x, [1, side, side, 1]), tf.tensor4d(y, [1, side, side, 1])];
}

const trueMi = (rho: number) => -0.5 * Math.log(1 - rho * rho);

/**
 * Trains `est` with Adam on a fresh 32×32 sample every step; returns the mean estimate of
 * the last 50 steps and the estimate on a fresh held-out 256×256 sample (65 536 pairs).
 */
function train(
  est: MineEstimator,
  rho: number,
  steps: number,
  seed: number,
): { lastSteps: number; heldOut: number } {
  const optimizer = tf.train.adam(1e-2);
  const history: number[] = [];
  for (let s = 0; s < steps; s++) {
    const [a, b] = gaussianPair(rho, 32, seed + s);
    const loss = optimizer.minimize(() => est.loss(a, b), true, est.trainableVariables)!;
    history.push(-loss.dataSync()[0]!);
    tf.dispose([a, b, loss]);
  }
  optimizer.dispose();
  const last = history.slice(-50);
  const [a, b] = gaussianPair(rho, 256, seed + 100_000);
  const heldOut = tf.tidy(() => est.estimate(a, b).dataSync()[0]!);
  tf.dispose([a, b]);
  return { lastSteps: last.reduce((p, v) => p + v, 0) / last.length, heldOut };
}

describe('MINE on cpu', () => {
  beforeAll(async () => {
    expect(await initBackend('cpu')).toBe('cpu');
  });

  it.each([0.9, 0.5])(
    'estimates the MI of correlated Gaussians within 10 per cent, ρ = %s',
    (rho) => {
      const est = new MineEstimator({ seed: 1, channelsA: 1, channelsB: 1 });
      const { lastSteps, heldOut } = train(est, rho, 300, 1000);
      const truth = trueMi(rho);
      console.info(
        `MINE ρ=${rho}: truth ${truth.toFixed(4)}, last-50 mean ${lastSteps.toFixed(4)}, held-out ${heldOut.toFixed(4)}`,
      );
      expect(Math.abs(heldOut - truth)).toBeLessThan(0.1 * truth);
      expect(Math.abs(lastSteps - truth)).toBeLessThan(0.1 * truth);
      est.dispose();
    },
  );

  it('gives ≈ 0 for independent variables', () => {
    const est = new MineEstimator({ seed: 2, channelsA: 1, channelsB: 1 });
    const { lastSteps, heldOut } = train(est, 0, 150, 3000);
    console.info(`MINE ρ=0: last-50 mean ${lastSteps.toFixed(4)}, held-out ${heldOut.toFixed(4)}`);
    expect(Math.abs(heldOut)).toBeLessThan(0.05);
    expect(Math.abs(lastSteps)).toBeLessThan(0.05);
    est.dispose();
  });

  it('converges with the moving-average bias correction within 10 per cent, ρ = 0.9', () => {
    const est = new MineEstimator({ seed: 1, biasCorrection: true, channelsA: 1, channelsB: 1 });
    const { lastSteps, heldOut } = train(est, 0.9, 300, 5000);
    const truth = trueMi(0.9);
    console.info(
      `MINE ρ=0.9 bias-corrected: truth ${truth.toFixed(4)}, last-50 mean ${lastSteps.toFixed(4)}, held-out ${heldOut.toFixed(4)}`,
    );
    expect(Math.abs(heldOut - truth)).toBeLessThan(0.1 * truth);
    expect(Math.abs(lastSteps - truth)).toBeLessThan(0.1 * truth);
    est.dispose();
  });

  it('draws global pairings as per-item permutations, new on every call, equal for equal seeds', () => {
    const shape = [2, 6, 7, 1];
    const est = new MineEstimator({ seed: 3 });
    const first = est.sampleMarginalIndices(shape);
    const second = est.sampleMarginalIndices(shape);
    const n = 42;
    for (const draw of [first, second]) {
      expect(draw.length).toBe(2 * n);
      for (let i = 0; i < 2; i++) {
        expect([...draw.subarray(i * n, (i + 1) * n)].sort((p, q) => p - q)).toEqual(
          Array.from({ length: n }, (_, k) => k),
        );
      }
    }
    expect([...second]).not.toEqual([...first]);
    expect([...first.subarray(0, n)]).not.toEqual([...first.subarray(n)]);
    expect([...new MineEstimator({ seed: 3 }).sampleMarginalIndices(shape)]).toEqual([...first]);
    expect([...new MineEstimator({ seed: 4 }).sampleMarginalIndices(shape)]).not.toEqual([
      ...first,
    ]);
  });

  it.each([
    [[2, 7, 9, 11, 1], 2],
    [[1, 20, 30, 1], 8],
    [[1, 5, 3, 1], 8],
  ])('keeps local partners within ±N on every axis: %j, N = %i', (shape, nb) => {
    const est = new MineEstimator({ shuffle: 'local', neighbourhood: nb, seed: 5 });
    const spatial = shape.slice(1, -1);
    const n = spatial.reduce((p, s) => p * s, 1);
    const strides = spatial.map((_, k) => spatial.slice(k + 1).reduce((p, s) => p * s, 1));
    const coords = (v: number) => spatial.map((s, k) => Math.floor(v / strides[k]!) % s);
    const seen = spatial.map(() => new Set<number>());
    const sums = spatial.map(() => 0);
    let interior = 0;
    for (let draw = 0; draw < 4; draw++) {
      const idx = est.sampleMarginalIndices(shape);
      expect(idx.length).toBe(shape[0]! * n);
      idx.forEach((q, j) => {
        expect(q).toBeGreaterThanOrEqual(0);
        expect(q).toBeLessThan(n);
        const cp = coords(j % n);
        const cq = coords(q);
        cp.forEach((c, k) => {
          expect(Math.abs(cq[k]! - c)).toBeLessThanOrEqual(nb);
          seen[k]!.add(cq[k]! - c);
        });
        if (cp.every((c, k) => c >= nb && c < spatial[k]! - nb)) {
          interior++;
          cp.forEach((c, k) => {
            sums[k]! += cq[k]! - c;
          });
        }
      });
    }
    // every offset in [−N, N] that fits in the axis occurs; interior offsets average ≈ 0
    spatial.forEach((s, k) => {
      const reach = Math.min(nb, s - 1);
      expect([...seen[k]!].sort((p, q) => p - q)).toEqual(
        Array.from({ length: 2 * reach + 1 }, (_, i) => i - reach),
      );
      if (interior > 200) expect(Math.abs(sums[k]! / interior)).toBeLessThan(0.1 * nb + 0.2);
    });
  });

  it('gradients w.r.t. both images match finite differences for a fixed pairing (2D and 3D, multi-channel)', () => {
    tf.tidy(() => {
      // data seeds chosen so that no ReLU pre-activation lies within the finite-difference
      // step of its kink (min |pre-activation| ≥ 8e-3, steps ≤ 1.6e-3): T is piecewise linear
      for (const [shapeA, shapeB, shuffle, seed] of [
        [[1, 6, 5, 1], [1, 6, 5, 1], 'global', 11],
        [[2, 3, 4, 3, 1], [2, 3, 4, 3, 2], 'local', 19],
      ] as const) {
        const est = new MineEstimator({ seed: 6, shuffle, neighbourhood: 1, features: 8 });
        const a = tf.randomUniform([...shapeA], 0, 1, 'float32', seed);
        const b = tf.sqrt(tf.randomUniform([...shapeB], 0, 1, 'float32', seed + 100));
        const marginalIndices = est.sampleMarginalIndices(shapeA);
        const f = (x?: tf.Tensor, y?: tf.Tensor) => est.estimate(x!, y!, { marginalIndices });
        // a fixed pairing gives a deterministic value
        expect(f(a, b).dataSync()[0]).toBe(f(a, b).dataSync()[0]);
        checkGradient(f, [a, b], { eps: 1e-3, rtol: 2e-2, atol: 1e-4 });
        // mineLoss is −estimate
        expect(mineLoss(a, b, { estimator: est, marginalIndices }).dataSync()[0]).toBeCloseTo(
          -f(a, b).dataSync()[0]!,
          6,
        );
        est.dispose();
      }
    });
  });

  it('the bias-corrected loss keeps the DV value, updates the moving average and rescales the log-denominator gradient by mean e^T / ema', () => {
    const channels = { channelsA: 1, channelsB: 1 };
    const est = new MineEstimator({ seed: 7, biasCorrection: true, emaDecay: 0.9, ...channels });
    const plain = new MineEstimator({ seed: 7, ...channels });
    const shape = [1, 8, 8, 1];
    const data = [0, 1].map((s) => [
      tf.randomNormal(shape, 0, 1, 'float32', 20 + s),
      tf.randomNormal(shape, 0, 1, 'float32', 30 + s),
    ]);
    const marginalIndices = est.sampleMarginalIndices(shape);
    // mean_marginal e^T for the fixed pairing, via the plain estimator's statistic
    const meanExpT = (a: tf.Tensor, b: tf.Tensor) =>
      tf.tidy(() => {
        const shuffled = tf.reshape(
          tf.gather(tf.reshape(b, [-1]), tf.tensor1d(marginalIndices, 'int32')),
          shape,
        );
        return tf.mean(tf.exp(plain.statistic(a, shuffled))).dataSync()[0]!;
      });
    const vars = () => est.trainableVariables;
    let ema = 0;
    data.forEach(([a, b], step) => {
      const m = meanExpT(a!, b!);
      const { value, grads } = tf.variableGrads(
        () => est.loss(a!, b!, { marginalIndices }),
        vars(),
      );
      ema = step === 0 ? m : 0.9 * ema + 0.1 * m;
      expect(est.movingAverage!.dataSync()[0]).toBeCloseTo(ema, 5);
      // value: the DV bound of the uncorrected estimator (same seed, same weights)
      const reference = plain.loss(a!, b!, { marginalIndices });
      expect(value.dataSync()[0]).toBeCloseTo(reference.dataSync()[0]!, 6);
      // gradient: −∇ mean T_joint + (m / ema) ∇ log mean e^{T_marginal}
      const plainGrads = tf.variableGrads(
        () => plain.loss(a!, b!, { marginalIndices }),
        plain.trainableVariables,
      ).grads;
      const jointGrads = tf.variableGrads(
        () => tf.neg(tf.mean(plain.statistic(a!, b!))) as tf.Scalar,
        plain.trainableVariables,
      ).grads;
      const ratio = m / ema;
      if (step === 1) expect(Math.abs(ratio - 1)).toBeGreaterThan(1e-3);
      est.trainableVariables.forEach((v, i) => {
        const pv = plain.trainableVariables[i]!;
        const expected = tf.add(
          jointGrads[pv.name]!,
          tf.mul(tf.sub(plainGrads[pv.name]!, jointGrads[pv.name]!), ratio),
        );
        const err = tf.max(tf.abs(tf.sub(grads[v.name]!, expected))).dataSync()[0]!;
        const scale = tf.max(tf.abs(expected)).dataSync()[0]!;
        expect(err).toBeLessThanOrEqual(1e-5 + 1e-4 * scale);
        tf.dispose([expected]);
      });
      tf.dispose([value, reference, ...Object.values(grads), ...Object.values(plainGrads)]);
      tf.dispose(Object.values(jointGrads));
    });
    tf.dispose(data.flat());
    est.dispose();
    plain.dispose();
  });

  it('keeps tf.memory flat over 100 joint training steps (estimator + image)', () => {
    const est = new MineEstimator({ shuffle: 'local', biasCorrection: true, seed: 8 });
    const fixed = tf.randomUniform([1, 12, 10, 1], 0, 1, 'float32', 40);
    const moving = tf.variable(tf.randomUniform([1, 12, 10, 1], 0, 1, 'float32', 41));
    const optimizer = tf.train.adam(1e-2);
    const step = () => {
      optimizer.minimize(() => mineLoss(fixed, moving, { estimator: est }));
    };
    step();
    step();
    const before = tf.memory().numTensors;
    for (let i = 0; i < 100; i++) step();
    expect(tf.memory().numTensors).toBe(before);
    optimizer.dispose();
    tf.dispose([fixed, moving]);
    const withEstimator = tf.memory().numTensors;
    est.dispose();
    expect(tf.memory().numTensors).toBe(withEstimator - 5); // 4 weights and the moving average
  });

  it('builds the network lazily from the first call, reproducibly from the seed', () => {
    tf.tidy(() => {
      const a = tf.randomUniform([1, 5, 6, 2], 0, 1, 'float32', 50);
      const b = tf.randomUniform([1, 5, 6, 1], 0, 1, 'float32', 51);
      const lazy = new MineEstimator({ seed: 9, features: 4 });
      expect(lazy.trainableVariables).toEqual([]);
      expect(lazy.channels).toBeNull();
      const value = lazy.estimate(a, b).dataSync()[0]!;
      expect(lazy.channels).toEqual([2, 1]);
      expect(lazy.trainableVariables.map((v) => v.shape)).toEqual([[3, 4], [4], [4, 1], [1]]);
      const eager = new MineEstimator({ seed: 9, features: 4, channelsA: 2, channelsB: 1 });
      expect(eager.estimate(a, b).dataSync()[0]).toBe(value);
      expect(eager.statistic(a, b).shape).toEqual([1, 5, 6, 1]);
      lazy.dispose();
      eager.dispose();
    });
  });
});

describe('MINE on wasm', () => {
  let cpu: { value: number; grad: Float32Array };
  const marginal = () => new MineEstimator({ seed: 10 }).sampleMarginalIndices([1, 9, 8, 7, 1]);
  const run = () =>
    tf.tidy(() => {
      const est = new MineEstimator({ seed: 11, shuffle: 'local', neighbourhood: 2 });
      const a = tf.randomUniform([1, 9, 8, 7, 1], 0, 1, 'float32', 60);
      const b = tf.square(tf.randomUniform([1, 9, 8, 7, 1], 0, 1, 'float32', 61));
      const marginalIndices = marginal();
      const value = est.estimate(a, b, { marginalIndices }).dataSync()[0]!;
      const grad = tf.grad((y: tf.Tensor) => est.estimate(a, y, { marginalIndices }))(b);
      const out = { value, grad: grad.dataSync() as Float32Array };
      est.dispose();
      return out;
    });

  beforeAll(async () => {
    expect(await initBackend('cpu')).toBe('cpu');
    cpu = run();
    expect(await initBackend('wasm')).toBe('wasm');
  });
  afterAll(async () => {
    await initBackend('cpu');
  });

  it('matches the cpu value and image gradient', () => {
    const wasm = run();
    expect(wasm.value).toBeCloseTo(cpu.value, 5);
    let worst = 0;
    wasm.grad.forEach((g, i) => {
      worst = Math.max(worst, Math.abs(g - cpu.grad[i]!));
    });
    expect(worst).toBeLessThan(1e-6 + 1e-4 * Math.max(...cpu.grad.map(Math.abs)));
  });
});

describe('MINE errors', () => {
  it('names the function, argument and shape', async () => {
    await initBackend('cpu');
    const est = new MineEstimator();
    expect(() => est.estimate(tf.zeros([1, 4, 4, 1]), tf.zeros([1, 4, 5, 1]))).toThrow(
      /MineEstimator\.estimate\(\): 'a' \[1, 4, 4, 1\] and 'b' \[1, 4, 5, 1\] must have the same batch and spatial shape/,
    );
    expect(() =>
      mineLoss(tf.zeros([1, 4, 4, 4, 1]), tf.zeros([1, 4, 4, 1]), { estimator: est }),
    ).toThrow(
      /'a' \[1, 4, 4, 4, 1\] and 'b' \[1, 4, 4, 1\] must have the same batch and spatial shape/,
    );
    expect(() => new MineEstimator({ features: 0 })).toThrow(
      /MineEstimator\(\): 'features' must be a positive integer, got 0/,
    );
    expect(() => new MineEstimator({ features: -3 })).toThrow(RegkitError);
    expect(() => new MineEstimator({ shuffle: 'local', neighbourhood: 0 })).toThrow(
      /MineEstimator\(\): 'neighbourhood' must be an integer ≥ 1 for local shuffling, got 0/,
    );
    expect(() => new MineEstimator({ shuffle: 'local', neighbourhood: 1.5 })).toThrow(
      /'neighbourhood'/,
    );
    expect(() => new MineEstimator({ shuffle: 'random' as 'global' })).toThrow(
      /'shuffle' must be one of 'global', 'local', got "random"/,
    );
    expect(() => new MineEstimator({ emaDecay: 1 })).toThrow(/'emaDecay' must be in \[0, 1\)/);
    expect(() => new MineEstimator({ channelsA: 0 })).toThrow(/'channelsA' must be a positive/);
    tf.tidy(() => est.estimate(tf.zeros([1, 4, 4, 1]), tf.zeros([1, 4, 4, 1])));
    expect(() => est.loss(tf.zeros([1, 4, 4, 2]), tf.zeros([1, 4, 4, 1]))).toThrow(
      /MineEstimator\.loss\(\): 'a' \[1, 4, 4, 2\] has 2 channel\(s\) and 'b' \[1, 4, 4, 1\] 1, but the statistics network was built for 1 and 1/,
    );
    const fixedChannels = new MineEstimator({ channelsA: 1, channelsB: 3 });
    expect(() => fixedChannels.estimate(tf.zeros([1, 4, 4, 1]), tf.zeros([1, 4, 4, 1]))).toThrow(
      /built for 1 and 3/,
    );
    expect(() =>
      est.estimate(tf.zeros([1, 4, 4, 1]), tf.zeros([1, 4, 4, 1]), {
        marginalIndices: new Int32Array(15),
      }),
    ).toThrow(/'marginalIndices' must hold 16 integers in \[0, 16\)/);
    expect(() =>
      est.estimate(tf.zeros([1, 2, 2, 1]), tf.zeros([1, 2, 2, 1]), {
        marginalIndices: [0, 1, 2, 4],
      }),
    ).toThrow(/'marginalIndices' must hold 4 integers in \[0, 4\)/);
    expect(() => est.estimate(tf.zeros([4, 4]), tf.zeros([4, 4]))).toThrow(/'a' must be an image/);
    expect(() =>
      mineLoss(tf.zeros([1, 4, 4, 1]), tf.zeros([1, 4, 4, 1]), { estimator: {} as MineEstimator }),
    ).toThrow(/mineLoss\(\): 'estimator' must be a MineEstimator/);
    est.dispose();
    fixedChannels.dispose();
    expect(() => est.estimate(tf.zeros([1, 4, 4, 1]), tf.zeros([1, 4, 4, 1]))).toThrow(
      /the estimator has been disposed/,
    );
  });
});
