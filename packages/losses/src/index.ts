/**
 * @regkit/losses — similarity measures and regularisers for registration, as plain
 * differentiable functions of `@regkit/core` tensors. Every loss is a scalar to minimise,
 * works in 2D and 3D and averages over the batch.
 *
 * @packageDocumentation
 */
export {
  type BezierAugmentOptions,
  bezierIntensityAugment,
  bezierIntensityCurve,
} from './augment.js';
export {
  contrastiveVoxelLoss,
  cosineSimilarityLoss,
  type ForegroundSampleOptions,
  type InfoNceOptions,
  infoNceLoss,
  type MindSscOptions,
  mindLoss,
  mindSsc,
  type SmoothedCosineOptions,
  sampleForegroundVoxels,
  smoothedCosineLoss,
} from './features.js';
export { l1Loss, mseLoss, rmsLoss } from './intensity.js';
export {
  type MineCallOptions,
  MineEstimator,
  type MineLossOptions,
  type MineOptions,
  type MineShuffle,
  type MineTrainingState,
  mineLoss,
} from './mine.js';
export {
  type BarrierNmiOptions,
  barrierNmiLoss,
  type InnregDissimilarityOptions,
  innregDissimilarity,
  type LocalMutualInformationOptions,
  localMutualInformationLoss,
  type MutualInformationOptions,
  mutualInformationLoss,
  normalizedMutualInformationLoss,
} from './mutual_information.js';
export { globalNccLoss, type LocalNccOptions, localNccLoss } from './ncc.js';
export {
  bendingEnergyLoss,
  diffusionLoss,
  inverseConsistencyLoss,
  type JacobianFoldingOptions,
  jacobianFoldingLoss,
  type VelocityKlOptions,
  velocityKlLoss,
} from './regularisers.js';
