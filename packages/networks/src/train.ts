import {
  fail,
  Module,
  type NamedWeights,
  outputWarped,
  type RegistrationModel,
  RegkitError,
  type Regulariser,
  type Similarity,
  type SimilarityLoss,
  similarityLoss,
  type TrainingContext,
  type TrainingTerms,
  tf,
} from '@regkit/core';
import { diffusionLoss } from '@regkit/losses';
import { stepWithinHeap, type WasmHeapPolicy } from './heap_fallback.js';
import { directoryHandler, encodeNamedWeights, nodeModule, writeFileAtomic } from './weights.js';

/** One training batch; the trainer disposes both tensors after the step. */
export interface TrainingPair {
  moving: tf.Tensor;
  fixed: tf.Tensor;
}

/** What the progress callback receives after every step. */
export interface TrainingProgress {
  /** 0-based epoch and step within it. */
  epoch: number;
  step: number;
  epochs: number;
  stepsPerEpoch: number;
  /** Total loss, weighted similarity term and weighted regulariser of this step. */
  loss: number;
  similarity: number;
  regularisation: number;
  /** Milliseconds since training (or this resumed run) started. */
  elapsedMs: number;
}

/**
 * A custom training objective: the weighted similarity and regularisation terms of one pair
 * (their sum is minimised), given the trainer's {@link TrainingContext} (the user's
 * similarity and regulariser, their weights, and the step counted from 1 as a seed).
 */
export type TrainingObjective = (pair: TrainingPair, context: TrainingContext) => TrainingTerms;

/**
 * The options every trainer shares ({@link trainRegistration} and the method presets
 * `trainSitreg`, `trainInnreg`): data, schedule, optimiser, similarity, regulariser,
 * checkpoints and progress.
 */
export interface TrainingOptions<P extends TrainingProgress = TrainingProgress> {
  /** Returns the training pair of (epoch, step): make it deterministic for exact resumption. */
  data: (epoch: number, step: number) => TrainingPair | Promise<TrainingPair>;
  /** Number of epochs. */
  epochs: number;
  /** Optimiser steps per epoch (default 1). */
  stepsPerEpoch?: number;
  /**
   * The similarity: a loss `(fixed, moving) => scalar` or a trainable module (a
   * `MineEstimator`, whose weights then train with the model and go into checkpoints).
   * Required for models without an objective of their own (VoxelMorph); for SITReg and
   * INNReg it replaces the method's default similarity term (LNCC; the NMI term).
   */
  similarity?: Similarity;
  /** α, the weight of the similarity term (default 1). */
  similarityWeight?: number;
  /**
   * The deformation regulariser of the model's output. Default: the method's own (KL for
   * probabilistic VoxelMorph, diffusion of the velocity or displacement otherwise, SITReg's
   * symmetric diffusion, INNReg's smoothness term).
   */
  regulariser?: Regulariser;
  /** Weight of the regulariser (default: the method's own, 1 for VoxelMorph and SITReg). */
  regularisationWeight?: number;
  /**
   * Adam learning rate (default 1e-4 unless a preset says otherwise) and moments. With
   * `parameterGroups`, the rate of the variables no group claims.
   */
  learningRate?: number;
  /**
   * Per-parameter-group learning rates: one Adam optimiser per group (same β₁, β₂) over the
   * trainable variables whose path (`model/…`, `similarity/…`) the group claims; variables no
   * group claims use `learningRate`. A variable belongs to the first group that claims it;
   * a group that claims none is an error. Checkpoints keep each group's Adam state, so a
   * resumed run is still bit-identical. FIRE uses three (affine 1e-5, non-rigid 5e-5,
   * synthesis 1e-4).
   */
  parameterGroups?: readonly ParameterGroup[];
  beta1?: number;
  beta2?: number;
  /**
   * A learning-rate schedule: the factor (finite, ≥ 0) that multiplies every group's rate at
   * optimiser step `step`, counted from 0 over the whole run (epoch · stepsPerEpoch + step).
   * Default: 1 at every step (constant rates). A pure function of the step, so a resumed run
   * follows the same schedule.
   *
   * @example
   * ```ts
   * // constant for the first half of 1000 steps, then linearly decayed towards 0
   * learningRateFactor: (step) => 1 - Math.max(0, step + 1 - 500) / 501
   * ```
   */
  learningRateFactor?: (step: number) => number;
  /**
   * Checkpoint directory: the model, similarity and optimiser state are written atomically
   * every `checkpointEvery` epochs and at the end; an existing checkpoint there is resumed.
   */
  checkpointDir?: string;
  /** Epochs between checkpoints (default 1). */
  checkpointEvery?: number;
  /** Called after every step. */
  onProgress?: (progress: P) => void;
  /**
   * When a step would not fit the wasm backend's 4 GiB heap (3D at brain sizes): `'cpu'`
   * (default) moves training to the cpu backend with a one-line warning, keeping weights and
   * optimiser state, and redoes the step; `'error'` throws the `RegkitMemoryError` (raised
   * before the heap is exhausted, naming the size and the fix).
   */
  onWasmHeapFull?: WasmHeapPolicy;
}

/** One group of {@link TrainingOptions.parameterGroups}: its own Adam and learning rate. */
export interface ParameterGroup {
  /** Name of the group (checkpoint key `optimizer@<name>/…`): non-empty, without '/' or '@'. */
  name: string;
  /** Adam learning rate of the group (> 0). */
  learningRate: number;
  /**
   * The trainable paths of the group: path prefixes (`'model/encoder/'`) or a predicate on the
   * full path (`model/…` for the model's weights, `similarity/…` for a trainable similarity's).
   */
  paths: readonly string[] | ((path: string) => boolean);
}

/** Options of {@link trainRegistration}. */
export interface TrainRegistrationOptions extends TrainingOptions {
  /**
   * The network, trained in place: any {@link RegistrationModel} that is a {@link Module}
   * (VoxelMorph, SITReg, INNReg, a user's own). Its `trainingLoss`, when it has one, is the
   * objective; otherwise α·similarity(fixed, warped) + w·regulariser(output).
   */
  model: RegistrationModel & Module;
  /** Replaces the model's objective by a custom one (every trainable weight still trains). */
  objective?: TrainingObjective;
}

/** What {@link trainRegistration} returns. */
export interface TrainingResult {
  /** Epochs completed in total (including those before a resumed checkpoint). */
  epochs: number;
  /** Epoch this run started from (0 unless resumed). */
  resumedFromEpoch: number;
  /** Mean loss of every completed epoch. */
  history: number[];
  /** Wall time of this run in milliseconds. */
  elapsedMs: number;
}

/** Thrown when a training step's loss is not finite; the weights keep their last finite values. */
export class TrainingDivergedError extends RegkitError {
  constructor(
    message: string,
    readonly epoch: number,
    readonly step: number,
  ) {
    super(message);
    this.name = 'TrainingDivergedError';
  }
}

interface CheckpointJson {
  format: 'regkit-checkpoint';
  epoch: number;
  history: number[];
  weightsDir: string;
  paths: string[];
  /** `getTrainingState()` of the model and the similarity, where they have one. */
  state?: { model?: unknown; similarity?: unknown };
}

const CHECKPOINT = 'checkpoint.json';

/** Every trained variable by path; `model/…` and `similarity/…`. */
function namedTrainables(
  model: Module,
  similarity: Similarity | undefined,
): Array<[string, tf.Variable]> {
  const out = model.namedVariables().map(([p, v]) => [`model/${p}`, v] as [string, tf.Variable]);
  if (similarity instanceof Module) {
    for (const [p, v] of similarity.namedVariables()) out.push([`similarity/${p}`, v]);
  }
  return out;
}

/**
 * tfjs's Adam keeps its moments in a list ordered like the gradient map it was first given,
 * whose keys are the variables' numeric registry names: ascending creation order.
 */
function optimizerOrder(vars: Array<[string, tf.Variable]>): Array<[string, tf.Variable]> {
  return vars
    .filter(([, v]) => v.trainable)
    .sort(([, a], [, b]) => Number(a.name) - Number(b.name) || a.name.localeCompare(b.name));
}

/**
 * tfjs's Adam keeps the bias-correction powers β₁ᵗ⁺¹, β₂ᵗ⁺¹ outside `getWeights()`, as
 * running float32 products; its `setWeights()` recomputes them with `pow`, which differs from
 * the products in the last bits for most t (a resumed run then drifts from an uninterrupted
 * one). Checkpoints store them, and loading assigns them back.
 */
interface AdamInternals {
  accBeta1: tf.Variable;
  accBeta2: tf.Variable;
  beta1: number;
  beta2: number;
}

/** A module with state besides its weights (a random stream): MINE, VoxelMorph. */
interface Stateful {
  getTrainingState(): unknown;
  setTrainingState(state: unknown): void;
}

/** The model and the similarity where they have a training state, by checkpoint key. */
function statefulModules(
  model: Module,
  similarity: Similarity | undefined,
): Array<[string, Stateful]> {
  const out: Array<[string, Stateful]> = [];
  for (const [key, m] of [
    ['model', model],
    ['similarity', similarity],
  ] as const) {
    const s = m as Partial<Stateful> | undefined;
    if (typeof s?.getTrainingState === 'function' && typeof s.setTrainingState === 'function') {
      out.push([key, s as Stateful]);
    }
  }
  return out;
}

/**
 * One Adam optimiser and the variables it steps: the default group (checkpoint keys
 * `optimizer/…`, as before groups existed) or a named {@link ParameterGroup}
 * (`optimizer@<name>/…`).
 */
interface OptimiserGroup {
  prefix: string;
  optimizer: tf.AdamOptimizer;
  /** The group's base learning rate (before {@link TrainingOptions.learningRateFactor}). */
  learningRate: number;
  vars: Array<[string, tf.Variable]>;
}

/** Adds the Adam state of `group` to `named`; returns the tensors the caller disposes. */
async function optimiserWeights(named: NamedWeights, group: OptimiserGroup): Promise<tf.Tensor[]> {
  const { prefix, optimizer, vars } = group;
  const opt = await optimizer.getWeights();
  const order = optimizerOrder(vars);
  const moments = opt.length - 1;
  if (moments > 0 && moments !== 2 * order.length) {
    opt[0]!.tensor.dispose();
    throw new RegkitError(
      `checkpoint: the optimiser ${prefix} holds ${moments / 2} moment pairs for ${order.length} trainable variables`,
    );
  }
  named[`${prefix}/iterations`] = opt[0]!.tensor;
  const adam = optimizer as unknown as AdamInternals;
  named[`${prefix}/accBeta1`] = adam.accBeta1;
  named[`${prefix}/accBeta2`] = adam.accBeta2;
  for (let i = 0; i < moments / 2; i++) {
    named[`${prefix}/m/${order[i]![0]}`] = opt[1 + i]!.tensor;
    named[`${prefix}/v/${order[i]![0]}`] = opt[1 + moments / 2 + i]!.tensor;
  }
  return [opt[0]!.tensor]; // getWeights() makes a new scalar for the iteration count
}

async function saveCheckpoint(
  dir: string,
  epoch: number,
  history: number[],
  vars: Array<[string, tf.Variable]>,
  groups: OptimiserGroup[],
  stateful: Array<[string, Stateful]>,
): Promise<void> {
  const fs = await nodeModule<typeof import('node:fs/promises')>('node:fs/promises');
  const path = await nodeModule<typeof import('node:path')>('node:path');
  const named: NamedWeights = {};
  for (const [p, v] of vars) named[p] = v;
  const owned: tf.Tensor[] = [];
  // a fresh directory per checkpoint; checkpoint.json (renamed last) names the complete one
  const weightsDir = `epoch-${String(epoch).padStart(6, '0')}`;
  try {
    for (const g of groups) owned.push(...(await optimiserWeights(named, g)));
    await directoryHandler(path.join(dir, weightsDir)).save!(await encodeNamedWeights(named));
  } finally {
    tf.dispose(owned);
  }
  const previous = await readCheckpointJson(dir).catch(() => null);
  const json: CheckpointJson = {
    format: 'regkit-checkpoint',
    epoch,
    history,
    weightsDir,
    paths: vars.map(([p]) => p),
  };
  if (stateful.length > 0) {
    json.state = Object.fromEntries(stateful.map(([k, m]) => [k, m.getTrainingState()]));
  }
  await writeFileAtomic(path.join(dir, CHECKPOINT), `${JSON.stringify(json)}\n`);
  if (previous && previous.weightsDir !== weightsDir) {
    await fs.rm(path.join(dir, previous.weightsDir), { recursive: true, force: true });
  }
}

async function readCheckpointJson(dir: string): Promise<CheckpointJson | null> {
  const fs = await nodeModule<typeof import('node:fs/promises')>('node:fs/promises');
  const path = await nodeModule<typeof import('node:path')>('node:path');
  let text: string;
  try {
    text = await fs.readFile(path.join(dir, CHECKPOINT), 'utf8');
  } catch {
    return null;
  }
  const json = JSON.parse(text) as CheckpointJson;
  if (json.format !== 'regkit-checkpoint') {
    throw new RegkitError(`${path.join(dir, CHECKPOINT)} is not a regkit checkpoint`);
  }
  return json;
}

/** Restores the Adam state of `group` from a checkpoint's weights (when it holds one). */
async function loadOptimiser(dir: string, saved: NamedWeights, group: OptimiserGroup) {
  const { prefix, optimizer, vars } = group;
  const order = optimizerOrder(vars);
  const keys = Object.keys(saved);
  if (!saved[`${prefix}/iterations`]) {
    if (keys.some((k) => k.startsWith('optimizer'))) {
      throw new RegkitError(
        `checkpoint ${dir} has no ${prefix} state: it was written with other parameter groups`,
      );
    }
    return;
  }
  const savedMoments = keys.filter((k) => k.startsWith(`${prefix}/m/`)).length;
  if (savedMoments !== order.length) {
    throw new RegkitError(
      `checkpoint ${dir}: ${prefix} holds the state of ${savedMoments} variables, this run's group has ${order.length} (other parameter groups?)`,
    );
  }
  const list: Array<{ name: string; tensor: tf.Tensor }> = [
    { name: 'iter', tensor: saved[`${prefix}/iterations`]! },
  ];
  for (const kind of ['m', 'v']) {
    for (const [p] of order) {
      const t = saved[`${prefix}/${kind}/${p}`];
      if (!t) throw new RegkitError(`checkpoint ${dir} lacks the optimiser state of '${p}'`);
      list.push({ name: `${p}/${kind}`, tensor: t });
    }
  }
  await optimizer.setWeights(list);
  const adam = optimizer as unknown as AdamInternals;
  const acc1 = saved[`${prefix}/accBeta1`];
  const acc2 = saved[`${prefix}/accBeta2`];
  if (acc1 && acc2) {
    adam.accBeta1.assign(acc1);
    adam.accBeta2.assign(acc2);
  } else {
    // an older checkpoint: replay the float32 products β·β·…·β of the saving run
    const t = saved[`${prefix}/iterations`]!.dataSync()[0]!;
    const b1 = Math.fround(adam.beta1);
    const b2 = Math.fround(adam.beta2);
    let [p1, p2] = [b1, b2];
    for (let i = 0; i < t; i++) [p1, p2] = [Math.fround(p1 * b1), Math.fround(p2 * b2)];
    tf.tidy(() => {
      adam.accBeta1.assign(tf.scalar(p1));
      adam.accBeta2.assign(tf.scalar(p2));
    });
  }
}

async function loadCheckpoint(
  dir: string,
  json: CheckpointJson,
  vars: Array<[string, tf.Variable]>,
  groups: OptimiserGroup[],
  stateful: Array<[string, Stateful]>,
): Promise<void> {
  const path = await nodeModule<typeof import('node:path')>('node:path');
  const artifacts = await directoryHandler(path.join(dir, json.weightsDir)).load!();
  const saved = tf.io.decodeWeights(
    artifacts.weightData as ArrayBuffer,
    artifacts.weightSpecs ?? [],
  ) as NamedWeights;
  try {
    const byPath = new Map(vars);
    for (const p of json.paths) {
      if (!byPath.has(p)) {
        throw new RegkitError(
          `checkpoint ${dir} holds '${p}', which this model and similarity lack`,
        );
      }
    }
    for (const [p, v] of vars) {
      const w = saved[p];
      if (!w)
        throw new RegkitError(`checkpoint ${dir} lacks '${p}': a different model or similarity?`);
      if (!tf.util.arraysEqual(w.shape, v.shape)) {
        throw new RegkitError(
          `checkpoint ${dir}: '${p}' has shape [${w.shape.join(', ')}], the model [${v.shape.join(', ')}]`,
        );
      }
      v.assign(w);
    }
    for (const g of groups) await loadOptimiser(dir, saved, g);
    for (const [key, m] of stateful) {
      const state = json.state?.[key as 'model' | 'similarity'];
      if (state !== undefined) m.setTrainingState(state);
    }
  } finally {
    tf.dispose(Object.values(saved));
  }
}

/** Validates {@link TrainingOptions.parameterGroups} (names, rates, paths). */
function checkParameterGroups(fn: string, groups: readonly ParameterGroup[] | undefined): void {
  if (groups === undefined) return;
  if (!Array.isArray(groups)) fail(fn, `'parameterGroups' must be an array of groups`);
  const names = new Set<string>();
  for (const g of groups) {
    const name = (g as Partial<ParameterGroup>)?.name;
    if (typeof name !== 'string' || !name || /[/@]/.test(name) || names.has(name)) {
      fail(
        fn,
        `every parameter group needs a unique non-empty name without '/' or '@', got ${JSON.stringify(name)}`,
      );
    }
    names.add(name);
    if (!(Number.isFinite(g.learningRate) && g.learningRate > 0)) {
      fail(fn, `parameter group '${name}': 'learningRate' must be > 0, got ${g.learningRate}`);
    }
    if (typeof g.paths !== 'function' && !Array.isArray(g.paths)) {
      fail(fn, `parameter group '${name}': 'paths' must be path prefixes or a predicate`);
    }
  }
}

/**
 * One Adam per parameter group over the trainable variables it claims (first claim wins),
 * then the default group (`learningRate`) over the rest, omitted when it is empty.
 */
function optimiserGroups(
  fn: string,
  vars: Array<[string, tf.Variable]>,
  parameterGroups: readonly ParameterGroup[] | undefined,
  learningRate: number,
  beta1 = 0.9,
  beta2 = 0.999,
): OptimiserGroup[] {
  const trainable = vars.filter(([, v]) => v.trainable);
  const claimed = new Set<string>();
  const out: OptimiserGroup[] = [];
  for (const g of parameterGroups ?? []) {
    const claims =
      typeof g.paths === 'function'
        ? g.paths
        : (p: string) => (g.paths as readonly string[]).some((prefix) => p.startsWith(prefix));
    const mine = trainable.filter(([p]) => !claimed.has(p) && claims(p));
    if (mine.length === 0) {
      fail(fn, `parameter group '${g.name}' claims no trainable variable`);
    }
    for (const [p] of mine) claimed.add(p);
    out.push({
      prefix: `optimizer@${g.name}`,
      optimizer: tf.train.adam(g.learningRate, beta1, beta2),
      learningRate: g.learningRate,
      vars: mine,
    });
  }
  const rest = trainable.filter(([p]) => !claimed.has(p));
  if (rest.length > 0 || out.length === 0) {
    out.unshift({
      prefix: 'optimizer',
      optimizer: tf.train.adam(learningRate, beta1, beta2),
      learningRate,
      vars: rest,
    });
  }
  return out;
}

/** `model.trainingLoss` as a {@link TrainingObjective}, when the model has one. */
function modelObjective(model: RegistrationModel): TrainingObjective | undefined {
  if (typeof model.trainingLoss !== 'function') return undefined;
  return (pair, context) => model.trainingLoss!(pair.moving, pair.fixed, context);
}

/**
 * The objective of a model without its own: α·similarity(fixed, warped) +
 * w·regulariser(output), the regulariser defaulting to {@link diffusionRegulariser} and w
 * to 1.
 */
export function defaultTerms(
  model: RegistrationModel,
  moving: tf.Tensor,
  fixed: tf.Tensor,
  context: TrainingContext,
): TrainingTerms {
  const similarity: SimilarityLoss =
    context.similarity ??
    fail('trainRegistration', `'similarity' is required for ${model.constructor.name}`);
  const out = model.apply(moving, fixed);
  const sim = tf.mul(similarity(fixed, outputWarped(out, moving)), context.similarityWeight);
  const reg = (context.regulariser ?? diffusionRegulariser)(out);
  return {
    similarity: sim as tf.Scalar,
    regularisation: tf.mul(reg, context.regularisationWeight ?? 1) as tf.Scalar,
  };
}

/**
 * The diffusion regulariser of a model output: `diffusionLoss` (mean squared forward
 * differences) of `velocity` when the method has one (what VoxelMorph regularises), else of
 * the `forward` displacement.
 */
export const diffusionRegulariser: Regulariser = (output) =>
  diffusionLoss(output.velocity ?? output.forward);

/**
 * Trains any registration network with any similarity and regulariser, minimising by Adam
 * over the model's weights and those of a trainable similarity (MINE's statistics network
 * maximises the same bound the model does):
 * - the model's own `trainingLoss` when it has one (VoxelMorph: posterior samples and the KL
 *   term of probabilistic models; SITReg: the symmetric loss; INNReg: the translation
 *   losses), given the user's similarity and regulariser to use in place of its defaults;
 * - else α · similarity(fixed, moving ∘ φ) + w · regulariser(output) ({@link defaultTerms}).
 *
 * - Learning rates: one Adam, or one per `parameterGroups` entry (FIRE's three).
 * - Progress: `onProgress` after every step.
 * - Checkpoints: with `checkpointDir`, weights, similarity, Adam state (moments, iteration
 *   count and bias-correction powers) and the `getTrainingState()` of the model and the
 *   similarity (random streams: MINE's shuffles, VoxelMorph's noise) are written atomically
 *   every `checkpointEvery` epochs; a later call with the same directory resumes after the
 *   last complete checkpoint (a kill at any moment loses at most the epochs since), and with
 *   a deterministic `data` ends with the weights of an uninterrupted run, bit for bit.
 * - Divergence: a non-finite loss stops training with a {@link TrainingDivergedError}
 *   naming the epoch, step and terms, before the update, so the weights stay finite.
 * - Memory: every step runs in `tf.tidy`; the number of tensors is the same after every epoch.
 *
 * @example
 * ```ts
 * const model = createVoxelMorph({ ndim: 2, probabilistic: true });
 * const mine = new MineEstimator({ shuffle: 'local', channelsA: 1, channelsB: 1 });
 * await trainRegistration({
 *   model, similarity: mine, similarityWeight: 2, epochs: 100,
 *   data: (epoch, step) => pairs[(epoch + step) % pairs.length],
 *   checkpointDir: 'runs/mine',
 * });
 * ```
 */
export async function trainRegistration(
  options: TrainRegistrationOptions,
): Promise<TrainingResult> {
  const fn = 'trainRegistration';
  const o = options ?? ({} as TrainRegistrationOptions);
  const objective = o.objective;
  if (objective !== undefined && typeof objective !== 'function') {
    fail(fn, `'objective' must be a function (pair, context) => { similarity, regularisation }`);
  }
  const model = o.model;
  if (!(model instanceof Module) || typeof (model as RegistrationModel).apply !== 'function') {
    fail(
      fn,
      `'model' must be a registration network (a Module with apply(moving, fixed)) such as createVoxelMorph(...)`,
    );
  }
  const epochs = o.epochs;
  const stepsPerEpoch = o.stepsPerEpoch ?? 1;
  for (const [name, v] of [
    ['epochs', epochs],
    ['stepsPerEpoch', stepsPerEpoch],
    ['checkpointEvery', o.checkpointEvery ?? 1],
  ] as const) {
    if (!Number.isInteger(v) || v < 1) fail(fn, `'${name}' must be a positive integer, got ${v}`);
  }
  const alpha = o.similarityWeight ?? 1;
  const lr = o.learningRate ?? 1e-4;
  for (const [name, v] of [
    ['similarityWeight', alpha],
    ['regularisationWeight', o.regularisationWeight ?? 0],
  ] as const) {
    if (!(Number.isFinite(v) && v >= 0))
      fail(fn, `'${name}' must be a finite number ≥ 0, got ${v}`);
  }
  if (!(lr > 0 && Number.isFinite(lr))) fail(fn, `'learningRate' must be > 0, got ${lr}`);
  const regulariser = o.regulariser;
  if (regulariser !== undefined && typeof regulariser !== 'function') {
    fail(
      fn,
      `'regulariser' must be a function (output) => scalar, got ${JSON.stringify(regulariser)}`,
    );
  }
  const similarity = o.similarity;
  const simLoss = similarity === undefined ? undefined : similarityLoss(similarity, fn);
  const ownObjective = objective ?? modelObjective(model);
  if (!ownObjective && !simLoss) {
    fail(
      fn,
      `'similarity' is required: ${model.constructor.name} has no training objective of its own`,
    );
  }
  const contextOf = (step: number): TrainingContext => ({
    similarity: simLoss,
    similarityWeight: alpha,
    regulariser,
    regularisationWeight: o.regularisationWeight,
    step,
  });

  checkParameterGroups(fn, o.parameterGroups);
  const rateFactor = o.learningRateFactor;
  if (rateFactor !== undefined && typeof rateFactor !== 'function') {
    fail(fn, `'learningRateFactor' must be a function (step) => factor ≥ 0`);
  }
  const history: number[] = [];
  let startEpoch = 0;
  const t0 = Date.now();

  const next = async (epoch: number, step: number): Promise<TrainingPair> => {
    const pair = await o.data(epoch, step);
    if (!pair || !(pair.moving instanceof tf.Tensor) || !(pair.fixed instanceof tf.Tensor)) {
      fail(fn, `'data(${epoch}, ${step})' must return { moving, fixed } tensors`);
    }
    return pair;
  };

  const lossOf = (pair: TrainingPair, terms: tf.Scalar[], step: number) => (): tf.Scalar => {
    const context = contextOf(step);
    const t = ownObjective
      ? ownObjective(pair, context)
      : defaultTerms(model, pair.moving, pair.fixed, context);
    terms.push(tf.keep(t.similarity), tf.keep(t.regularisation));
    return tf.add(t.similarity, t.regularisation) as tf.Scalar;
  };

  if (similarity instanceof Module && similarity.namedVariables().length === 0) {
    // a lazily built similarity network (MINE without channel options) gets its weights
    // from one call, so they train and checkpoint from the first step
    const pair = await next(0, 0);
    tf.tidy(() => {
      simLoss!(pair.fixed, pair.moving);
    });
    tf.dispose([pair.moving, pair.fixed]);
  }
  const vars = namedTrainables(model, similarity);
  const trainable = vars.map(([, v]) => v).filter((v) => v.trainable);
  const stateful = statefulModules(model, similarity);
  const groups = optimiserGroups(fn, vars, o.parameterGroups, lr, o.beta1, o.beta2);
  if (o.checkpointDir) {
    const json = await readCheckpointJson(o.checkpointDir);
    if (json) {
      await loadCheckpoint(o.checkpointDir, json, vars, groups, stateful);
      startEpoch = json.epoch;
      history.push(...json.history);
    }
  }

  for (let epoch = startEpoch; epoch < epochs; epoch++) {
    let sum = 0;
    for (let step = 0; step < stepsPerEpoch; step++) {
      const pair = await next(epoch, step);
      const terms: tf.Scalar[] = [];
      let value: tf.Scalar;
      let grads: Record<string, tf.Variable | tf.Tensor>;
      try {
        ({ value, grads } = await stepWithinHeap(
          fn,
          o.onWasmHeapFull,
          pair.moving,
          () => tf.variableGrads(lossOf(pair, terms, epoch * stepsPerEpoch + step + 1), trainable),
          () => tf.dispose(terms.splice(0)),
        ));
      } finally {
        tf.dispose([pair.moving, pair.fixed]);
      }
      const [loss, sim, reg] = [
        value.dataSync()[0]!,
        terms[0]!.dataSync()[0]!,
        terms[1]!.dataSync()[0]!,
      ];
      tf.dispose([value, ...terms]);
      if (!Number.isFinite(loss)) {
        tf.dispose(Object.values(grads));
        throw new TrainingDivergedError(
          `${fn}(): the loss became ${loss} at epoch ${epoch}, step ${step} (similarity term ${sim}, regulariser ${reg}); ` +
            'the weights keep their last finite values' +
            (o.checkpointDir ? ` and the last checkpoint in ${o.checkpointDir} is intact` : '') +
            '. Lower the learning rate or the similarity weight, or check the images for NaN.',
          epoch,
          step,
        );
      }
      if (rateFactor) {
        const k = epoch * stepsPerEpoch + step;
        const factor = rateFactor(k);
        if (!(typeof factor === 'number' && Number.isFinite(factor) && factor >= 0)) {
          tf.dispose(Object.values(grads));
          fail(fn, `'learningRateFactor(${k})' must be a finite number ≥ 0, got ${factor}`);
        }
        // tfjs's Adam reads its (protected) learningRate at every applyGradients
        for (const g of groups) {
          (g.optimizer as unknown as { learningRate: number }).learningRate =
            g.learningRate * factor;
        }
      }
      for (const g of groups) {
        const part: tf.NamedTensorMap = {};
        for (const [, v] of g.vars) if (v.trainable) part[v.name] = grads[v.name] as tf.Tensor;
        g.optimizer.applyGradients(part as never);
      }
      tf.dispose(Object.values(grads));
      sum += loss;
      o.onProgress?.({
        epoch,
        step,
        epochs,
        stepsPerEpoch,
        loss,
        similarity: sim,
        regularisation: reg,
        elapsedMs: Date.now() - t0,
      });
    }
    history.push(sum / stepsPerEpoch);
    const done = epoch + 1;
    if (o.checkpointDir && (done % (o.checkpointEvery ?? 1) === 0 || done === epochs)) {
      await saveCheckpoint(o.checkpointDir, done, history, vars, groups, stateful);
    }
  }
  for (const g of groups) g.optimizer.dispose();
  return {
    epochs: Math.max(epochs, startEpoch),
    resumedFromEpoch: startEpoch,
    history,
    elapsedMs: Date.now() - t0,
  };
}
