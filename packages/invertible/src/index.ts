/**
 * @regkit/invertible — invertible deformation layers for registration networks (SITReg,
 * Honkamaa & Marttinen): the deformation inversion layer (Anderson-accelerated fixed point with
 * an implicit gradient), the generic solver behind it, cubic B-spline deformations that are
 * invertible by construction, the symmetric update, and the SVF alternatives.
 *
 * Conventions as every regkit package: displacement fields `[B, ...S, ndim]` in voxels,
 * component k along spatial axis k, φ(x) = x + u(x), linear sampling with voxel centres at
 * integer indices.
 *
 * @packageDocumentation
 */

/** Optimal control-point bounds of SITReg (official table, a function for any factor) and the bounded spline deformation. */
export {
  type BoundedSplineOptions,
  boundedCubicSplineDeformation,
  CONTROL_POINT_BOUND_TABLE,
  computeControlPointBound,
  controlPointBound,
} from './bounded_spline.js';
/** Anderson-accelerated fixed-point solver x = fn(x) with per-iteration diagnostics. */
export {
  type AndersonOptions,
  andersonWeights,
  type FixedPointOptions,
  type FixedPointResult,
  fixedPointSolve,
  type StopCriterion,
} from './fixed_point.js';
/** The deformation inversion layer v = −u(x + v), with an implicit (memory-constant) gradient. */
export {
  type InvertFieldBackwardOptions,
  type InvertFieldOptions,
  invertField,
  type SolveInfo,
} from './invert.js';
/** SVF alternative: the inverse velocity −v (exp(v) itself is core's `integrateVelocity`). */
export { invertVelocity } from './svf.js';
/** The symmetric update forward = A(a, b) ∘ A(b, a)⁻¹, inverse = A(b, a) ∘ A(a, b)⁻¹. */
export { type DeformationPair, symmetricUpdate } from './symmetric.js';
