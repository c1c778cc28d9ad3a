/**
 * @regkit/inn — invertible neural-network blocks on TensorFlow.js (channels-last images
 * `[B, ...S, C]`, 2D and 3D): affine coupling blocks with exact inverses and
 * log-determinants, LU-parametrised invertible 1×1 convolutions, invertible squeezes,
 * dense blocks and dynamic depthwise convolution (DDWConv) subnets, and INNReg's invertible
 * image-to-image translator.
 *
 * @packageDocumentation
 */

// coupling blocks (INNReg's InvBlock) and the subnet choice
export {
  AffineCouplingBlock,
  type AffineCouplingOptions,
  resolveSubnet,
  type SubnetChoice,
} from './coupling.js';
// F/G/H subnets: dense block, dense block with DDWConv local attention
export {
  DdwDenseBlock,
  type DdwDenseBlockOptions,
  DenseBlock,
  type DenseBlockOptions,
  ddwDenseBlockSubnet,
  denseBlockSubnet,
} from './dense_block.js';
// per-sample depthwise convolution and DDWConv
export { depthwiseConvPerSample } from './depthwise.js';
export {
  DynamicDepthwiseConv,
  type DynamicDepthwiseConvOptions,
  type DynamicKernelMode,
} from './dynamic_depthwise_conv.js';
// invertible 1×1 convolution, memory-saving gradients, sequences, squeeze
export { InvertibleConv1x1, type InvertibleConv1x1Options } from './invertible_conv.js';
export { runRecomputed } from './recompute.js';
export { InvertibleSequence, type InvertibleSequenceOptions } from './sequence.js';
export { InvertibleSqueeze, InvertibleUnsqueeze, squeeze, unsqueeze } from './squeeze.js';
// INNReg's translator
export {
  createInvertibleTranslator,
  InvertibleTranslator,
  type InvertibleTranslatorOptions,
  type TranslatorLift,
} from './translator.js';
// interfaces
export {
  InvertibleModule,
  type InvertibleOutput,
  type Subnet,
  type SubnetFactory,
} from './types.js';
