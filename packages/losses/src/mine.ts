import {
  assertImage,
  fail,
  fmtShape,
  lookUpOption,
  Module,
  mulberry32,
  reflectIndex,
  type SeededRandom,
  tf,
} from '@regkit/core';

/** How {@link MineEstimator} pairs voxels for the product of marginals. */
export type MineShuffle = 'global' | 'local';

/** Options of {@link MineEstimator}. */
export interface MineOptions {
  /** L, the number of hidden features per voxel pair (default 30, as Snaauw et al.). */
  features?: number;
  /**
   * Marginal sampling (default `'global'`): `'global'` pairs each voxel of `a` with the voxel
   * of `b` at a random permutation of all positions (per batch item, MINE_global);
   * `'local'` pairs it with `b` at a random offset of at most `neighbourhood` voxels along
   * every spatial axis (MINE_local).
   */
  shuffle?: MineShuffle;
  /** N, the largest offset of local shuffling in voxels (default 8, as Snaauw et al.). */
  neighbourhood?: number;
  /**
   * MINE's bias-corrected gradient in {@link MineEstimator.loss} (default false): the
   * denominator E_Q[e^T] of the gradient of log E_Q[e^T] is replaced by its exponential
   * moving average. The value stays the Donsker–Varadhan bound.
   */
  biasCorrection?: boolean;
  /** Decay of that moving average, in [0, 1) (default 0.99: ema ← 0.99 ema + 0.01 batch). */
  emaDecay?: number;
  /** Seed of the Glorot initialisation and of the shuffles (default 0). */
  seed?: number;
  /**
   * Channels of `a`. Giving `channelsA` or `channelsB` builds the network in the constructor
   * (the other defaults to 1), so `trainableVariables` is complete before the first call;
   * giving neither infers both from the first call.
   */
  channelsA?: number;
  /** Channels of `b` (see `channelsA`). */
  channelsB?: number;
}

/** Per-call options of {@link MineEstimator.estimate} and {@link MineEstimator.loss}. */
export interface MineCallOptions {
  /**
   * A fixed pairing instead of a fresh random one: entry i·n + p (n voxels per image) is the
   * voxel q ∈ [0, n) of batch item i of `b` that voxel p of `a` is paired with in the
   * marginal term (row-major voxel order). {@link MineEstimator.sampleMarginalIndices} draws
   * them as the estimator would. For gradient checks and custom sampling.
   */
  marginalIndices?: Int32Array | readonly number[];
}

/**
 * What {@link MineEstimator} keeps besides its weights (see
 * {@link MineEstimator.getTrainingState}): JSON, for training checkpoints.
 */
export interface MineTrainingState {
  /** Position of the shuffle stream (a uint32). */
  shuffle: number;
  /** Whether the moving average has been set by a first call (bias correction). */
  emaReady: boolean;
}

interface Network {
  channelsA: number;
  channelsB: number;
  /** first layer `[cA + cB, L]`, rows of a first */
  w1: tf.Variable;
  b1: tf.Variable;
  /** second layer `[L, 1]` */
  w2: tf.Variable;
  b2: tf.Variable;
}

/** Uniform Glorot (Xavier) initial weights `[fanIn, fanOut]` from a seeded generator. */
function glorot(rand: () => number, fanIn: number, fanOut: number): tf.Tensor2D {
  const limit = Math.sqrt(6 / (fanIn + fanOut));
  const values = Float32Array.from({ length: fanIn * fanOut }, () => (2 * rand() - 1) * limit);
  return tf.tensor2d(values, [fanIn, fanOut]);
}

/** Seed of the shuffle stream, decorrelated from the weight stream of the same seed. */
function shuffleSeed(seed: number): number {
  return Math.imul((seed ^ 0x9e3779b9) >>> 0, 0x85ebca6b) >>> 0;
}

/**
 * Mutual information neural estimation (MINE, Belghazi et al. 2018) as a registration
 * similarity (Snaauw et al. 2022, "Mutual information neural estimation for unsupervised
 * multi-modal registration of brain images").
 *
 * A statistics network T_θ scores every voxel pair: a 2-layer CNN with 1×1(×1) filters, i.e.
 * the same small MLP on the channel vector [a(p), b(p)] of every voxel,
 * Linear(cA + cB → L) → ReLU → Linear(L → 1) (Snaauw et al. leave the nonlinearity unnamed;
 * ReLU as in the common MINE implementations). The Donsker–Varadhan bound
 *
 *   I(a; b) ≥ mean_p T(a(p), b(p)) − log mean_p exp T(a(p), b(σ(p)))
 *
 * is computed per batch item (the log-mean-exp as logsumexp − log n, stable for any T) and
 * averaged over the batch; σ is a fresh random pairing on every call (see
 * {@link MineOptions.shuffle}). Maximise it over θ to estimate MI; {@link MineEstimator.loss}
 * is its negative. Weights are Glorot-uniform from `seed`, biases zero, so equal seeds give
 * equal estimators.
 *
 * Local shuffling reflects offsets that leave the image at its border (core's
 * `reflectIndex`: −1 → 0, n → n − 1), so every partner stays within ±N of the voxel on every
 * axis; offsets are uniform in [−N, N] and include 0.
 */
export class MineEstimator extends Module {
  readonly features: number;
  readonly shuffle: MineShuffle;
  readonly neighbourhood: number;
  readonly biasCorrection: boolean;
  readonly emaDecay: number;
  readonly seed: number;
  private net: Network | null = null;
  private ema: tf.Variable | null = null;
  private emaReady = false;
  private disposed = false;
  private readonly weightRand: () => number;
  private readonly shuffleRand: SeededRandom;

  constructor(options: MineOptions = {}) {
    super();
    const fn = 'MineEstimator';
    const o = options ?? {};
    this.features = o.features ?? 30;
    this.shuffle = lookUpOption(fn, 'shuffle', o.shuffle ?? 'global', ['global', 'local'] as const);
    this.neighbourhood = o.neighbourhood ?? 8;
    this.biasCorrection = o.biasCorrection ?? false;
    this.emaDecay = o.emaDecay ?? 0.99;
    this.seed = o.seed ?? 0;
    if (!Number.isInteger(this.features) || this.features < 1) {
      fail(fn, `'features' must be a positive integer, got ${this.features}`);
    }
    if (
      this.shuffle === 'local' &&
      (!Number.isInteger(this.neighbourhood) || this.neighbourhood < 1)
    ) {
      fail(
        fn,
        `'neighbourhood' must be an integer ≥ 1 for local shuffling, got ${this.neighbourhood}`,
      );
    }
    if (typeof this.biasCorrection !== 'boolean') {
      fail(fn, `'biasCorrection' must be a boolean, got ${JSON.stringify(this.biasCorrection)}`);
    }
    if (!(this.emaDecay >= 0 && this.emaDecay < 1)) {
      fail(fn, `'emaDecay' must be in [0, 1), got ${this.emaDecay}`);
    }
    if (!Number.isFinite(this.seed)) fail(fn, `'seed' must be a finite number, got ${this.seed}`);
    for (const key of ['channelsA', 'channelsB'] as const) {
      const c = o[key];
      if (c !== undefined && (!Number.isInteger(c) || c < 1)) {
        fail(fn, `'${key}' must be a positive integer, got ${c}`);
      }
    }
    this.weightRand = mulberry32(this.seed);
    this.shuffleRand = mulberry32(shuffleSeed(this.seed));
    if (o.channelsA !== undefined || o.channelsB !== undefined) {
      this.build(o.channelsA ?? 1, o.channelsB ?? 1);
    }
    if (this.biasCorrection) this.ema = this.addWeight('ema', tf.scalar(1), false);
  }

  /** The moving average of mean exp T over the marginal samples (bias correction only). */
  get movingAverage(): tf.Variable | null {
    return this.ema;
  }

  /** `[channelsA, channelsB]` of the built network, or null before the first call. */
  get channels(): [number, number] | null {
    return this.net ? [this.net.channelsA, this.net.channelsB] : null;
  }

  /**
   * The statistic T_θ(a(p), b(p)) of every voxel pair (no shuffling), e.g. to display the
   * network's response over an intensity grid.
   *
   * @param a `[B, ...S, cA]`.
   * @param b `[B, ...S, cB]`, same batch and spatial shape.
   * @returns `[B, ...S, 1]`.
   */
  statistic(a: tf.Tensor, b: tf.Tensor): tf.Tensor {
    const fn = 'MineEstimator.statistic';
    this.check(fn, a, b);
    return tf.tidy(() => {
      const at = channelMajor(a);
      const bt = channelMajor(b);
      return tf.reshape(this.scores(at, bt), [...a.shape.slice(0, -1), 1]);
    });
  }

  /**
   * Draws a marginal pairing for images of `shape` `[B, ...S, C]` with this estimator's
   * shuffle and random stream (advancing it), in the layout of
   * {@link MineCallOptions.marginalIndices}.
   */
  sampleMarginalIndices(shape: readonly number[]): Int32Array {
    const fn = 'MineEstimator.sampleMarginalIndices';
    if (
      !Array.isArray(shape) ||
      (shape.length !== 4 && shape.length !== 5) ||
      !shape.every((v) => Number.isInteger(v) && v > 0)
    ) {
      fail(
        fn,
        `'shape' must be an image shape [B, H, W, C] or [B, D, H, W, C], got ${JSON.stringify(shape)}`,
      );
    }
    const batch = shape[0]!;
    const spatial = shape.slice(1, -1);
    const n = spatial.reduce((p, s) => p * s, 1);
    const out = new Int32Array(batch * n);
    const rand = this.shuffleRand;
    if (this.shuffle === 'global') {
      for (let i = 0; i < batch; i++) {
        const perm = out.subarray(i * n, (i + 1) * n);
        for (let p = 0; p < n; p++) perm[p] = p;
        for (let p = n - 1; p > 0; p--) {
          const q = Math.floor(rand() * (p + 1));
          const t = perm[p]!;
          perm[p] = perm[q]!;
          perm[q] = t;
        }
      }
      return out;
    }
    const r = this.neighbourhood;
    const width = 2 * r + 1;
    const nd = spatial.length;
    const strides = spatial.map((_, k) => spatial.slice(k + 1).reduce((p, s) => p * s, 1));
    for (let i = 0; i < batch; i++) {
      for (let p = 0; p < n; p++) {
        let q = 0;
        for (let k = 0; k < nd; k++) {
          const coord = Math.floor(p / strides[k]!) % spatial[k]!;
          const offset = Math.floor(rand() * width) - r;
          q += reflectIndex(coord + offset, spatial[k]!) * strides[k]!;
        }
        out[i * n + p] = q;
      }
    }
    return out;
  }

  /**
   * The Donsker–Varadhan lower bound on I(a; b) in nats, averaged over the batch:
   * mean_joint T − (logsumexp_marginal T − log n). Differentiable w.r.t. `a`, `b` and the
   * network; a new marginal pairing is drawn on every call unless one is given. Never
   * touches the moving average.
   *
   * @param a `[B, ...S, cA]`, e.g. the fixed image.
   * @param b `[B, ...S, cB]`, same batch and spatial shape, e.g. the warped moving image.
   * @returns scalar estimate to maximise.
   */
  estimate(a: tf.Tensor, b: tf.Tensor, options: MineCallOptions = {}): tf.Scalar {
    return this.bound('MineEstimator.estimate', a, b, options, false);
  }

  /**
   * −{@link estimate}: the scalar to minimise w.r.t. both the statistics network and the
   * images. With `biasCorrection` the value is unchanged but its gradient uses MINE's moving
   * average: the forward pass updates ema ← d·ema + (1 − d)·mean_batch mean_marginal e^T (the
   * first call sets ema to that mean), and the gradient of the log-denominator is
   * Σ_p e^{T_p} ∇T_p / (n · ema) instead of the minibatch softmax (a `tf.customGrad`).
   */
  loss(a: tf.Tensor, b: tf.Tensor, options: MineCallOptions = {}): tf.Scalar {
    return tf.tidy(
      () =>
        tf.neg(this.bound('MineEstimator.loss', a, b, options, this.biasCorrection)) as tf.Scalar,
    );
  }

  /**
   * The state besides the weights that later calls depend on: the position of the shuffle
   * stream and whether the moving average has started. Training checkpoints store it
   * (`trainRegistration` does), so a resumed run draws the same pairings as an uninterrupted one.
   */
  getTrainingState(): MineTrainingState {
    return { shuffle: this.shuffleRand.state, emaReady: this.emaReady };
  }

  /** Restores what {@link getTrainingState} returned (the weights are restored separately). */
  setTrainingState(state: MineTrainingState): void {
    const fn = 'MineEstimator.setTrainingState';
    if (
      !state ||
      !Number.isInteger(state.shuffle) ||
      state.shuffle < 0 ||
      state.shuffle > 0xffffffff ||
      typeof state.emaReady !== 'boolean'
    ) {
      fail(
        fn,
        `'state' must be { shuffle: uint32, emaReady: boolean }, got ${JSON.stringify(state)}`,
      );
    }
    this.shuffleRand.state = state.shuffle;
    this.emaReady = state.emaReady;
  }

  /** Frees the network's variables and the moving average. Idempotent. */
  override dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    super.dispose();
    this.net = null;
    this.ema = null;
  }

  private build(channelsA: number, channelsB: number): void {
    const rand = this.weightRand;
    const L = this.features;
    this.net = {
      channelsA,
      channelsB,
      w1: this.addWeight('w1', glorot(rand, channelsA + channelsB, L)),
      b1: this.addWeight('b1', tf.zeros([L])),
      w2: this.addWeight('w2', glorot(rand, L, 1)),
      b2: this.addWeight('b2', tf.zeros([1])),
    };
  }

  /** Validates the pair and builds the network on the first call. */
  private check(fn: string, a: unknown, b: unknown): void {
    if (this.disposed) fail(fn, 'the estimator has been disposed');
    assertImage(fn, 'a', a);
    assertImage(fn, 'b', b);
    const ta = a as tf.Tensor;
    const tb = b as tf.Tensor;
    if (ta.rank !== tb.rank || !tf.util.arraysEqual(ta.shape.slice(0, -1), tb.shape.slice(0, -1))) {
      fail(
        fn,
        `'a' ${fmtShape(ta.shape)} and 'b' ${fmtShape(tb.shape)} must have the same batch and spatial shape`,
      );
    }
    const ca = ta.shape[ta.rank - 1]!;
    const cb = tb.shape[tb.rank - 1]!;
    if (!this.net) {
      this.build(ca, cb);
    } else if (ca !== this.net.channelsA || cb !== this.net.channelsB) {
      fail(
        fn,
        `'a' ${fmtShape(ta.shape)} has ${ca} channel(s) and 'b' ${fmtShape(tb.shape)} ${cb}, but the statistics network was built for ${this.net.channelsA} and ${this.net.channelsB}`,
      );
    }
  }

  /**
   * T for voxel columns: T = w2ᵀ relu(W1ᵀ [a; b] + b1) + b2, `[1, m]` from `[cA, m]` and
   * `[cB, m]`. Voxels along the last axis and the first bias folded into the matmul (a row
   * of ones): the cpu backend's broadcasting adds and their axis-0 reductions are slow.
   */
  private scores(at: tf.Tensor, bt: tf.Tensor): tf.Tensor {
    const n = this.net!;
    const m = at.shape[1]!;
    const x = tf.concat([at, bt, tf.ones([1, m])], 0) as tf.Tensor2D;
    const w = tf.concat([n.w1, tf.reshape(n.b1, [1, this.features])], 0) as tf.Tensor2D;
    const h = tf.relu(tf.matMul(w, x, true, false)) as tf.Tensor2D;
    return tf.add(tf.matMul(n.w2, h, true, false), n.b2);
  }

  private bound(
    fn: string,
    a: tf.Tensor,
    b: tf.Tensor,
    options: MineCallOptions,
    corrected: boolean,
  ): tf.Scalar {
    this.check(fn, a, b);
    const batch = a.shape[0]!;
    const n = a.shape.slice(1, -1).reduce((p, s) => p * s, 1);
    const given = options?.marginalIndices;
    let local: ArrayLike<number>;
    if (given !== undefined) {
      if (
        !(given instanceof Int32Array || Array.isArray(given)) ||
        given.length !== batch * n ||
        !Array.prototype.every.call(given, (q: number) => Number.isInteger(q) && q >= 0 && q < n)
      ) {
        fail(
          fn,
          `'marginalIndices' must hold ${batch * n} integers in [0, ${n}) (one per voxel of ${fmtShape(a.shape)})`,
        );
      }
      local = given;
    } else {
      local = this.sampleMarginalIndices(a.shape);
    }
    const flat = new Int32Array(batch * n);
    for (let i = 0; i < batch; i++) {
      for (let p = 0; p < n; p++) flat[i * n + p] = i * n + local[i * n + p]!;
    }
    return tf.tidy(() => {
      const at = channelMajor(a);
      const bt = channelMajor(b);
      const joint = tf.reshape(this.scores(at, bt), [batch, n]);
      const shuffled = tf.gather(bt, tf.tensor1d(flat, 'int32'), 1);
      const marginal = tf.reshape(this.scores(at, shuffled), [batch, n]);
      const logMeanExp = corrected ? this.correctedLogMeanExp(marginal) : plainLogMeanExp(marginal);
      return tf.mean(tf.sub(tf.mean(joint, 1), logMeanExp)) as tf.Scalar;
    });
  }

  /**
   * log mean_p e^{t_p} per row `[B]`, whose gradient divides by the moving average instead
   * of the row's own mean: ∂/∂t_p = e^{t_p} / (n · ema). Updates the moving average.
   */
  private correctedLogMeanExp(t: tf.Tensor): tf.Tensor {
    const ema = this.ema!;
    const decay = this.emaDecay;
    const ready = this.emaReady;
    this.emaReady = true;
    const logN = Math.log(t.shape[1]!);
    return tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
      const x = args[0] as tf.Tensor;
      const save = args[1] as tf.GradSaveFunc;
      const value = tf.sub(tf.logSumExp(x, 1), logN);
      const batchMean = tf.mean(tf.exp(value));
      const next = ready ? tf.add(tf.mul(ema, decay), tf.mul(batchMean, 1 - decay)) : batchMean;
      ema.assign(next);
      save([x, tf.log(next)]);
      return {
        value,
        gradFunc: (dy, saved) => {
          const [xs, logEma] = saved as [tf.Tensor, tf.Tensor];
          const weights = tf.exp(tf.sub(tf.sub(xs, logN), logEma));
          return [tf.mul(tf.expandDims(dy as tf.Tensor, 1), weights)];
        },
      };
    })(t);
  }
}

/** `[C, B·n]` float32: channel rows, voxel columns (a reshape for one channel). */
function channelMajor(x: tf.Tensor): tf.Tensor2D {
  const c = x.shape[x.rank - 1]!;
  const f = x.dtype === 'float32' ? x : tf.cast(x, 'float32');
  return (c === 1 ? tf.reshape(f, [1, -1]) : tf.transpose(tf.reshape(f, [-1, c]))) as tf.Tensor2D;
}

/** log mean_p e^{t_p} per row `[B]` as logsumexp − log n, with the softmax as gradient. */
function plainLogMeanExp(t: tf.Tensor): tf.Tensor {
  const logN = Math.log(t.shape[1]!);
  return tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const x = args[0] as tf.Tensor;
    const save = args[1] as tf.GradSaveFunc;
    const lse = tf.logSumExp(x, 1, true);
    save([x, lse]);
    return {
      value: tf.sub(tf.squeeze(lse, [1]), logN),
      gradFunc: (dy, saved) => {
        const [xs, l] = saved as [tf.Tensor, tf.Tensor];
        return [tf.mul(tf.expandDims(dy as tf.Tensor, 1), tf.exp(tf.sub(xs, l)))];
      },
    };
  })(t);
}

/**
 * MINE similarity loss for registration: `estimator.loss(a, b)`, i.e. minus the
 * Donsker–Varadhan bound on I(a; b). The estimator is trained jointly with the registration
 * (Snaauw et al. eq. 3): the optimiser must update both the registration parameters and
 * `estimator.trainableVariables` with this one loss — the network maximises the bound
 * (tightening the MI estimate) while the warp maximises the estimated MI.
 *
 * @param a `[B, ...S, cA]`, e.g. the fixed image.
 * @param b `[B, ...S, cB]`, e.g. the warped moving image.
 * @returns scalar to minimise.
 */
export function mineLoss(a: tf.Tensor, b: tf.Tensor, options: MineLossOptions): tf.Scalar {
  const estimator = options?.estimator;
  if (!(estimator instanceof MineEstimator)) {
    fail(
      'mineLoss',
      `'estimator' must be a MineEstimator, got ${estimator === null ? 'null' : typeof estimator}`,
    );
  }
  const { estimator: _estimator, ...call } = options;
  return estimator.loss(a, b, call);
}

/** Options of {@link mineLoss}: the estimator and the per-call options. */
export interface MineLossOptions extends MineCallOptions {
  /** The statistics network (train its weights with the registration: pass it as the similarity). */
  estimator: MineEstimator;
}
