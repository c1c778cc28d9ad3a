/**
 * @regkit/metrics — evaluation measures for registration results. Every function takes
 * `@regkit/core` tensors, downloads them once, returns plain numbers (async) and leaks no
 * tensors.
 *
 * @packageDocumentation
 */
export {
  type ConsistencyError,
  type ConsistencyOptions,
  type ConsistencyStats,
  type ConsistencySummary,
  cycleConsistencyError,
  type DirectionStats,
  inverseConsistencyError,
} from './consistency.js';
export { type DiceOptions, dice, type MeanDiceOptions, meanDice } from './dice.js';
export { squaredDistanceTransform } from './edt.js';
export { type HausdorffOptions, hausdorff95, percentileOf } from './hausdorff.js';
export {
  type IntensityRangeOptions,
  ncc,
  psnr,
  type SsimOptions,
  ssim,
  ssimMap,
} from './intensity.js';
export { intensityClasses } from './intensity_classes.js';
export { foldingPercent, jacobianStd, logJacobianStd } from './jacobian.js';
export { type TargetRegistrationError, targetRegistrationError } from './tre.js';
