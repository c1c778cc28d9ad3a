/**
 * @regkit/networks — registration networks on `@regkit/core` tensors: the VoxelMorph U-Net,
 * (diffeomorphic, probabilistic) VoxelMorph, a training loop that takes any `@regkit/losses`
 * similarity, and weight directories (`model.json` + `weights.bin`).
 *
 * @packageDocumentation
 */

export {
  blurPool,
  type DnsLayerOptions,
  dnsLayer,
  dnsPairs,
  dnsRelations,
  upsampleLinear2x,
} from './dns.js';
/** FIRE: synthesis encoder/decoders with affine + non-rigid transformation networks. */
export {
  createFire,
  Fire,
  FireAffineNet,
  FireConvBlock,
  FireDecoder,
  FireEncoder,
  type FireLearningRates,
  type FireLossOptions,
  type FireLossResult,
  type FireLossTerms,
  FireNonRigidNet,
  type FireOptions,
  type FireOutput,
  FireResidualBlock,
  type FireTransform,
  FireTransformNet,
  fireLoss,
  fireParameterGroups,
  fireRms,
  fireSmoothWeight,
  instanceNorm,
  laplacianEnergy,
  normalisedToVoxelAffine,
  type TrainFireOptions,
  trainFire,
} from './fire.js';
export type { WasmHeapPolicy } from './heap_fallback.js';
/** INNReg: invertible translation network T + residual U-Net registration network R. */
export {
  createInnreg,
  createInnregRegistrationNet,
  Innreg,
  type InnregLossOptions,
  type InnregLossTerms,
  type InnregLossWeights,
  type InnregOptions,
  InnregRegistrationNet,
  type InnregRegistrationOptions,
  type InnregRegistrationOutput,
  InnregResidualBlock,
  type InnregTrainingProgress,
  type TrainInnregOptions,
  trainInnreg,
} from './innreg.js';
/** MASR-Net: DNS structural representations trained by contrastive learning (Mok et al. 2024). */
export {
  createMasrNet,
  loadMasrNet,
  MasrNet,
  type MasrNetMetadata,
  type MasrNetOptions,
  saveMasrNet,
  type TrainMasrNetOptions,
  trainMasrNet,
} from './masrnet.js';
export {
  BUNDLED_WEIGHTS,
  bundledWeights,
  loadRegistrationNetwork,
  type NetworkBuilder,
  type NetworkMetadata,
  type NetworkPrediction,
  networkMethods,
  type RegistrationNetwork,
  registerNetworkBuilder,
  saveRegistrationNetwork,
} from './pretrained.js';
/** SITReg: symmetric, inverse-consistent, topology-preserving multi-resolution registration. */
export {
  createSitreg,
  Sitreg,
  SitregFeatureExtractor,
  SitregHead,
  type SitregLossOptions,
  type SitregLossTerms,
  type SitregOptions,
  type SitregOutput,
  sitregLoss,
  type TrainSitregOptions,
  trainSitreg,
} from './sitreg.js';
export {
  defaultTerms,
  diffusionRegulariser,
  type ParameterGroup,
  TrainingDivergedError,
  type TrainingObjective,
  type TrainingOptions,
  type TrainingPair,
  type TrainingProgress,
  type TrainingResult,
  type TrainRegistrationOptions,
  trainRegistration,
} from './train.js';
export { createUnet, Unet, type UnetOptions } from './unet.js';
export {
  createVoxelMorph,
  optimalLogVariance,
  VoxelMorph,
  type VoxelMorphCallOptions,
  type VoxelMorphOptions,
  type VoxelMorphOutput,
} from './voxelmorph.js';
export {
  directoryHandler,
  encodeNamedWeights,
  loadWeights,
  readWeights,
  saveWeights,
  type WeightsJson,
  writeFileAtomic,
} from './weights.js';
