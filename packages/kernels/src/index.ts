/**
 * @regkit/kernels — WebAssembly-SIMD kernels for regkit's hot ops on the TensorFlow.js
 * `cpu` and `wasm` backends. They replace the JavaScript kernels of `@regkit/core` and
 * `@regkit/losses` under the same names and contracts (`RegkitWarp`, `RegkitWarpGrad`,
 * `RegkitWarpImageGrad`, `RegkitWarpFieldGrad`,
 * `RegkitResizeLinear`, `RegkitResizeLinearGrad`, `RegkitLocalNcc`, `RegkitMindSsc`, `RegkitMindSscGrad`,
 * `RegkitParzenJoint`, `RegkitParzenJointGrad`, `RegkitJacobianDet`, `RegkitJacobianDetGrad`,
 * `RegkitLeakyReluGrad`, `RegkitMaxPool`, `RegkitMaxPoolGrad`, `RegkitUpsampleNearest`,
 * `RegkitUpsampleNearestGrad`),
 * so `warp()`, `resizeField()`, `localNccLoss()`, `mindSsc()`, the mutual information losses,
 * `jacobianDeterminant()` and everything built on them (`composeFields`,
 * `integrateVelocity`, training loops) get faster with no code change, and
 * the stock tfjs `Conv3D`, `Conv3DBackpropInputV2`, `Conv3DBackpropFilterV2`,
 * `Conv2D`, `Conv2DBackpropInput`, `Conv2DBackpropFilter`, `LeakyRelu`, `UnsortedSegmentSum`, and
 * `Sum` (over leading axes), `Concat` and `SplitV` (along the last axis) kernels (slow,
 * single-threaded, missing or wrong on wasm).
 *
 * The compiled kernels are embedded in this bundle: no network, no file paths.
 *
 * @example
 * ```ts
 * import { initBackend, warp } from '@regkit/core';
 * import { initKernels, registerKernels } from '@regkit/kernels';
 *
 * await initBackend('wasm'); // also loads @regkit/kernels by itself when it is installed
 * await initKernels();
 * registerKernels();
 * const moved = warp(moving, field);
 * ```
 *
 * @packageDocumentation
 */
import {
  RegkitJacobianDet,
  RegkitJacobianDetGrad,
  RegkitLeakyReluGrad,
  RegkitLocalNcc,
  RegkitMaxPool,
  RegkitMaxPoolGrad,
  RegkitMindSsc,
  RegkitMindSscGrad,
  RegkitParzenJoint,
  RegkitParzenJointGrad,
  RegkitResizeLinear,
  RegkitResizeLinearGrad,
  RegkitUpsampleNearest,
  RegkitUpsampleNearestGrad,
  RegkitWarp,
  RegkitWarpFieldGrad,
  RegkitWarpGrad,
  RegkitWarpImageGrad,
  replaceKernel,
  tf,
} from '@regkit/core';
import { activationKernelConfigs, leakyReluGradKernelFunc } from './activation.js';
import { CONV_KERNEL_NAMES, createConvKernels } from './conv.js';
import {
  jacobianDetGradKernelFunc,
  jacobianDetKernelFunc,
  jacobianKernelConfigs,
} from './jacobian.js';
import { localNccKernelConfig, localNccKernelFunc } from './lncc.js';
import { kernelsReady } from './loader.js';
import { mindSscGradKernelFunc, mindSscKernelConfigs, mindSscKernelFunc } from './mind.js';
import { parzenJointGradKernelFunc, parzenJointKernelFunc, parzenKernelConfigs } from './parzen.js';
import {
  maxPoolGradKernelFunc,
  maxPoolKernelConfigs,
  maxPoolKernelFunc,
  upsampleNearestGradKernelFunc,
  upsampleNearestKernelFunc,
} from './pool.js';
import { ROW_KERNEL_NAMES, rowKernelConfigs } from './rows.js';
import {
  resizeLinearGradKernelFunc,
  resizeLinearKernelFunc,
  warpFieldGradKernelFunc,
  warpGradKernelFunc,
  warpImageGradKernelFunc,
  warpKernelConfigs,
  warpKernelFunc,
} from './warp.js';

export { activationKernelConfigs, leakyReluGradKernelFunc } from './activation.js';
export { CONV_KERNEL_NAMES, type ConvExports, createConvKernels } from './conv.js';
export {
  jacobianDetGradKernelFunc,
  jacobianDetKernelFunc,
  jacobianKernelConfigs,
} from './jacobian.js';
export { localNccKernelConfig, localNccKernelFunc } from './lncc.js';
export {
  initKernels,
  type KernelOptions,
  kernelMemoryBytes,
  kernelsReady,
  kernelThreads,
  kernelThreadsReason,
  setKernelThreads,
} from './loader.js';
export {
  mindSscGradKernelFunc,
  mindSscKernelConfig,
  mindSscKernelConfigs,
  mindSscKernelFunc,
} from './mind.js';
export {
  parzenJointGradKernelFunc,
  parzenJointKernelFunc,
  parzenKernelConfigs,
} from './parzen.js';
export {
  maxPoolGradKernelFunc,
  maxPoolKernelConfigs,
  maxPoolKernelFunc,
  upsampleNearestGradKernelFunc,
  upsampleNearestKernelFunc,
} from './pool.js';
export { ROW_KERNEL_NAMES, rowKernelConfigs } from './rows.js';
export {
  resizeLinearGradKernelFunc,
  resizeLinearKernelFunc,
  warpFieldGradKernelFunc,
  warpGradKernelFunc,
  warpImageGradKernelFunc,
  warpKernelConfigs,
  warpKernelFunc,
} from './warp.js';

/** Backends the kernels are registered for. */
export const KERNEL_BACKENDS = ['cpu', 'wasm'] as const;

/** Names of the kernels this package provides. */
export const KERNEL_NAMES = [
  RegkitWarp,
  RegkitWarpGrad,
  RegkitWarpImageGrad,
  RegkitWarpFieldGrad,
  RegkitResizeLinear,
  RegkitResizeLinearGrad,
  RegkitLocalNcc,
  RegkitMindSsc,
  RegkitMindSscGrad,
  RegkitParzenJoint,
  RegkitParzenJointGrad,
  RegkitJacobianDet,
  RegkitJacobianDetGrad,
  RegkitLeakyReluGrad,
  RegkitMaxPool,
  RegkitMaxPoolGrad,
  RegkitUpsampleNearest,
  RegkitUpsampleNearestGrad,
  'LeakyRelu',
  ...ROW_KERNEL_NAMES,
  ...CONV_KERNEL_NAMES,
] as const;

let convRegistered = false;

/**
 * Registers the WebAssembly kernels for the `cpu` and `wasm` backends, replacing what is
 * registered under the same names (core's JavaScript kernels). Synchronous; call it after
 * `await initKernels()` (throws otherwise). Idempotent. `initBackend()` of `@regkit/core`
 * does both when this package is installed.
 */
export function registerKernels(): void {
  if (!kernelsReady()) {
    throw new Error('@regkit/kernels: registerKernels() needs `await initKernels()` first');
  }
  for (const backendName of KERNEL_BACKENDS) {
    for (const config of warpKernelConfigs(backendName)) replaceKernel(config);
    replaceKernel(localNccKernelConfig(backendName));
    for (const config of mindSscKernelConfigs(backendName)) replaceKernel(config);
    for (const config of parzenKernelConfigs(backendName)) replaceKernel(config);
    for (const config of jacobianKernelConfigs(backendName)) replaceKernel(config);
    for (const config of activationKernelConfigs(backendName)) replaceKernel(config);
    for (const config of maxPoolKernelConfigs(backendName)) replaceKernel(config);
    for (const config of rowKernelConfigs(backendName)) replaceKernel(config);
  }
  if (!convRegistered) {
    convRegistered = true;
    for (const config of createConvKernels()) replaceKernel(config);
  }
}

/**
 * True when this package's kernels are the ones registered for `backendName` (default: the
 * current backend), i.e. `warp`, `resizeLinear` and `localNccLoss` run WebAssembly SIMD there.
 */
export function kernelsRegistered(backendName: string = tf.getBackend()): boolean {
  const ours: Array<[string, tf.KernelFunc]> = [
    [RegkitWarp, warpKernelFunc],
    [RegkitWarpGrad, warpGradKernelFunc],
    [RegkitWarpImageGrad, warpImageGradKernelFunc],
    [RegkitWarpFieldGrad, warpFieldGradKernelFunc],
    [RegkitResizeLinear, resizeLinearKernelFunc],
    [RegkitResizeLinearGrad, resizeLinearGradKernelFunc],
    [RegkitLocalNcc, localNccKernelFunc],
    [RegkitMindSsc, mindSscKernelFunc],
    [RegkitMindSscGrad, mindSscGradKernelFunc],
    [RegkitParzenJoint, parzenJointKernelFunc],
    [RegkitParzenJointGrad, parzenJointGradKernelFunc],
    [RegkitJacobianDet, jacobianDetKernelFunc],
    [RegkitJacobianDetGrad, jacobianDetGradKernelFunc],
    [RegkitLeakyReluGrad, leakyReluGradKernelFunc],
    [RegkitMaxPool, maxPoolKernelFunc],
    [RegkitMaxPoolGrad, maxPoolGradKernelFunc],
    [RegkitUpsampleNearest, upsampleNearestKernelFunc],
    [RegkitUpsampleNearestGrad, upsampleNearestGradKernelFunc],
  ];
  return ours.every(([name, func]) => tf.getKernel(name, backendName)?.kernelFunc === func);
}
