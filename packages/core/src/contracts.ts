/**
 * The contracts every regkit method, loss, trainer, optimiser, metric and command shares.
 * Types only, plus two small helpers ({@link similarityLoss}, {@link outputWarped}); any
 * object with the right shape satisfies them, whichever package (or user file) defines it.
 *
 * Layout (see the package doc): image `[B, ...S, C]`, displacement `[B, ...S, ndim]` in
 * voxels with φ(x) = x + u(x) and `warp(m, u)(x) = m(x + u(x))`.
 */
import { Module } from './module.js';
import type { tf } from './tf.js';
import { fail } from './validate.js';
import { warp } from './warp.js';

/**
 * A similarity as a plain loss: `(fixed, moving) => scalar to minimise`, both
 * `[B, ...S, C]` (images or feature maps on the same grid). Every loss of `@regkit/losses`
 * (`localNccLoss`, `mutualInformationLoss`, `mindLoss`, `mseLoss`, …) is one as it is; bind
 * options with a closure: `(f, m) => localNccLoss(f, m, { window: 9 })`.
 */
export type SimilarityLoss = (fixed: tf.Tensor, moving: tf.Tensor) => tf.Scalar;

/**
 * A trainable similarity: a {@link Module} whose `loss(fixed, moving)` is minimised and whose
 * weights train with whatever uses it (e.g. `MineEstimator`: the statistics network ascends
 * the same bound the registration descends).
 */
export interface SimilarityModule extends Module {
  loss(fixed: tf.Tensor, moving: tf.Tensor): tf.Scalar;
}

/** A {@link SimilarityLoss} or a trainable {@link SimilarityModule}: anything minimised. */
export type Similarity = SimilarityLoss | SimilarityModule;

/**
 * What a registration method returns for a pair (tensors the caller disposes):
 * - `forward` `[B, ...S, ndim]`: displacement u with `warp(moving, forward) ≈ fixed`;
 * - `inverse` `[B, ...S, ndim]`: displacement of φ⁻¹ (`warp(fixed, inverse) ≈ moving`),
 *   for methods that give one;
 * - `velocity` `[B, ...S', ndim]`: the stationary velocity (or the raw predicted field) of
 *   velocity-based methods, what their regulariser acts on;
 * - `affine` `[B, ndim, ndim + 1]`: the affine part A·x + t in voxel coordinates (rows per
 *   output axis, last column t), for methods with an affine stage; `forward` already
 *   includes it;
 * - `warped` `[B, ...S, C]`: `warp(moving, forward)`, when the method computes it anyway.
 */
export interface RegistrationOutput {
  forward: tf.Tensor;
  inverse?: tf.Tensor;
  velocity?: tf.Tensor;
  affine?: tf.Tensor;
  warped?: tf.Tensor;
}

/** The weighted terms of one training pair (scalars; their sum is minimised). */
export interface TrainingTerms {
  similarity: tf.Scalar;
  regularisation: tf.Scalar;
}

/** What a trainer hands a model's own {@link RegistrationModel.trainingLoss}. */
export interface TrainingContext {
  /** The similarity to use in place of the method's default, when the user gave one. */
  similarity?: SimilarityLoss;
  /** α, the weight of the similarity term. */
  similarityWeight: number;
  /** A regulariser to use in place of the method's default, when the user gave one. */
  regulariser?: Regulariser;
  /** The weight of the regulariser (the method's default when the user gave none). */
  regularisationWeight?: number;
  /** Optimiser step counted from 1: a seed for per-step sampling (exact resumption). */
  step: number;
}

/**
 * A registration method: `apply(moving, fixed, options?)` with `[B, ...S, C]` images gives a
 * {@link RegistrationOutput} in the fixed image's grid. Every network of `@regkit/networks`
 * implements it, so any similarity, regulariser, trainer, metric or command works with any
 * method. `trainingLoss` is the method's own objective (SITReg's symmetric loss, INNReg's
 * translation losses), which takes the trainer's similarity as an option; methods without
 * one train on α·similarity(fixed, warped) + w·regulariser(output).
 */
export interface RegistrationModel<
  Output extends RegistrationOutput = RegistrationOutput,
  CallOptions = Record<string, unknown>,
> {
  /** Spatial dimensions of the images it registers. */
  readonly ndim: 2 | 3;
  apply(moving: tf.Tensor, fixed: tf.Tensor, options?: CallOptions): Output;
  trainingLoss?(moving: tf.Tensor, fixed: tf.Tensor, context: TrainingContext): TrainingTerms;
}

/**
 * A dense feature extractor: `apply(image)` maps `[B, ...S, C]` to features `[B, ...S, F]`
 * on the same grid (MIND-SSC, a network encoder, DNS), so a similarity can compare features
 * of the fixed and the warped moving image; features may be computed once and warped.
 */
export interface FeatureExtractor {
  apply(image: tf.Tensor): tf.Tensor;
}

/** A deformation regulariser: a scalar to minimise from a method's output. */
export type Regulariser = (output: RegistrationOutput) => tf.Scalar;

/**
 * The plain loss function of a {@link Similarity}: the function itself, or
 * `(f, m) => module.loss(f, m)` for a trainable one. Throws naming `fn` otherwise.
 */
export function similarityLoss(similarity: Similarity, fn = 'similarityLoss'): SimilarityLoss {
  if (typeof similarity === 'function') return similarity;
  if (similarity instanceof Module && typeof (similarity as SimilarityModule).loss === 'function') {
    return (f, m) => similarity.loss(f, m);
  }
  return fail(
    fn,
    `'similarity' must be a loss function (fixed, moving) => scalar or a Module with a loss(fixed, moving) method, got ${similarity === null ? 'null' : typeof similarity}`,
  );
}

/** `output.warped` when the method gave it, else `warp(moving, output.forward)`. */
export function outputWarped(output: RegistrationOutput, moving: tf.Tensor): tf.Tensor {
  return output.warped ?? warp(moving, output.forward);
}
