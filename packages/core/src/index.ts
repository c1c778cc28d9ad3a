/**
 * @regkit/core — the shared tensor interface of regkit and its field and warp ops.
 *
 * Conventions (every regkit package):
 * - image `[B, ...spatial, C]`, channels last, spatial `[H, W]` or `[D, H, W]`;
 * - displacement field `[B, ...spatial, ndim]` in voxels, component k along spatial axis k;
 * - a deformation is φ(x) = x + u(x) and `warp(m, u)(x) = m(x + u(x))`, voxel centres at
 *   integer indices (torch `grid_sample(..., align_corners=True)`).
 *
 * @packageDocumentation
 */
import './register_gradients.js';
import './mind_ssc_grad.js';
import { installGradTargets } from './grad_targets.js';
import { registerJsKernels } from './register_kernels.js';

registerJsKernels();
installGradTargets();

export {
  type BackendName,
  type InitBackendOptions,
  initBackend,
  type KernelModule,
  loadOptionalKernels,
  WASM_FILE_NAMES,
  type WasmPaths,
  wasmFileLocation,
} from './backend.js';
export {
  isWasmBackend,
  type KernelBackendLike,
  makeOutput,
  makeWasmOutput,
  runFloatKernel,
  withValues,
} from './backend_io.js';
export { boxSum } from './box_sum.js';
export { type CubicBSplineOptions, cubicBSpline, cubicBSplineField } from './bspline.js';
export {
  composeFields,
  type IntegrateVelocityOptions,
  integrateVelocity,
  integrateVelocityWithVjp,
  type VelocityDeformationOptions,
  type VelocityIntegration,
  velocityDeformation,
} from './compose.js';
export {
  type FeatureExtractor,
  outputWarped,
  type RegistrationModel,
  type RegistrationOutput,
  type Regulariser,
  type Similarity,
  type SimilarityLoss,
  type SimilarityModule,
  similarityLoss,
  type TrainingContext,
  type TrainingTerms,
} from './contracts.js';
export { RegkitBackendError, RegkitError } from './errors.js';
export { affineField, identityGrid } from './grid.js';
export { jacobianDeterminant, spatialGradient } from './jacobian.js';
export {
  isInitialKernel,
  registerKernelFixes,
  replaceKernel,
  WASM_KERNELS_REPLACED,
} from './kernel_fixes.js';
export {
  RegkitBoxSum,
  type RegkitBoxSumAttrs,
  RegkitJacobianDet,
  RegkitJacobianDetGrad,
  RegkitLeakyReluGrad,
  type RegkitLeakyReluGradAttrs,
  RegkitLocalNcc,
  type RegkitLocalNccAttrs,
  RegkitMaxPool,
  type RegkitMaxPoolAttrs,
  RegkitMaxPoolGrad,
  RegkitMindSsc,
  type RegkitMindSscAttrs,
  RegkitMindSscGrad,
  RegkitParzenJoint,
  type RegkitParzenJointAttrs,
  RegkitParzenJointGrad,
  RegkitResizeLinear,
  type RegkitResizeLinearAttrs,
  RegkitResizeLinearGrad,
  type RegkitUpsampleAttrs,
  RegkitUpsampleNearest,
  RegkitUpsampleNearestGrad,
  RegkitWarp,
  type RegkitWarpAttrs,
  RegkitWarpFieldGrad,
  RegkitWarpGrad,
  type RegkitWarpGradInputs,
  RegkitWarpImageGrad,
  type RegkitWarpInputs,
} from './kernel_names.js';
export {
  avgPool,
  Conv,
  type ConvOptions,
  Dense,
  type DenseOptions,
  GroupNorm,
  type Initializer,
  initialWeight,
  maxPool,
  upsampleNearest,
} from './layers.js';
export { Module, type NamedWeights } from './module.js';
export {
  mulberry32,
  type RandomSmoothFieldOptions,
  randomSmoothField,
  type SeededRandom,
} from './random.js';
export { registerJsKernels } from './register_kernels.js';
export { resizeField, resizeFieldVjp, resizeImage, resizeLinear } from './resize.js';
export { type ResizePass, resizeLinearPlan } from './resize_kernel_js.js';
export { gaussianKernel1d, gaussianSmooth, reflectIndex } from './smooth.js';
export { tf } from './tf.js';
export {
  assertField,
  assertImage,
  assertImagePair,
  assertNdim,
  assertSpatialShape,
  assertTensor,
  fail,
  fmtShape,
  lookUpOption,
  perAxis,
} from './validate.js';
export { vjp } from './vjp.js';
export {
  hasKernels,
  type Interpolation,
  type Padding,
  PORTABLE_OPS_FLAG,
  type WarpOptions,
  warp,
} from './warp.js';
export {
  DEFAULT_WASM_HEAP_BUDGET_BYTES,
  guardWasmHeap,
  moveToCpuBackend,
  RegkitMemoryError,
  setWasmHeapBudget,
  WASM_HEAP_LIMIT_BYTES,
  type WasmHeapFallbackOptions,
  wasmHeapBudget,
  wasmHeapTensorBytes,
  withWasmHeapFallback,
} from './wasm_heap.js';
