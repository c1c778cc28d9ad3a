/** Loading and registration: nothing happens on import; init is idempotent; replacing core's kernels. */
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
  tf,
} from '@regkit/core';
import * as kernels from '@regkit/kernels';
import { describe, expect, it } from 'vitest';

describe('initKernels / registerKernels', () => {
  it('importing registers nothing and starts nothing', () => {
    expect(kernels.kernelsReady()).toBe(false);
    expect(kernels.kernelMemoryBytes()).toBe(0);
    for (const backend of kernels.KERNEL_BACKENDS) {
      expect(kernels.kernelsRegistered(backend)).toBe(false);
      // core's JavaScript kernels are what runs until registerKernels()
      expect(tf.getKernel(RegkitWarp, backend)).toBeDefined();
    }
  });

  it('registerKernels() before initKernels() throws a clear error', () => {
    expect(() => kernels.registerKernels()).toThrow(/initKernels/);
  });

  it('initKernels() is idempotent and then registerKernels() replaces core kernels', async () => {
    const replaced = [...kernels.CONV_KERNEL_NAMES, ...kernels.ROW_KERNEL_NAMES, 'LeakyRelu'];
    const before = Object.fromEntries(
      kernels.KERNEL_BACKENDS.flatMap((b) =>
        replaced.map((k) => [`${b}/${k}`, tf.getKernel(k, b)?.kernelFunc]),
      ),
    );
    const p = kernels.initKernels();
    expect(kernels.initKernels()).toBe(p);
    await p;
    expect(kernels.kernelsReady()).toBe(true);
    kernels.registerKernels();
    kernels.registerKernels();
    for (const backend of kernels.KERNEL_BACKENDS) {
      expect(kernels.kernelsRegistered(backend)).toBe(true);
      expect(tf.getKernel(RegkitWarp, backend)!.kernelFunc).toBe(kernels.warpKernelFunc);
      expect(tf.getKernel(RegkitWarpGrad, backend)!.kernelFunc).toBe(kernels.warpGradKernelFunc);
      expect(tf.getKernel(RegkitWarpImageGrad, backend)!.kernelFunc).toBe(
        kernels.warpImageGradKernelFunc,
      );
      expect(tf.getKernel(RegkitWarpFieldGrad, backend)!.kernelFunc).toBe(
        kernels.warpFieldGradKernelFunc,
      );
      expect(tf.getKernel(RegkitResizeLinear, backend)!.kernelFunc).toBe(
        kernels.resizeLinearKernelFunc,
      );
      expect(tf.getKernel(RegkitResizeLinearGrad, backend)!.kernelFunc).toBe(
        kernels.resizeLinearGradKernelFunc,
      );
      expect(tf.getKernel(RegkitLocalNcc, backend)!.kernelFunc).toBe(kernels.localNccKernelFunc);
      expect(tf.getKernel(RegkitMindSsc, backend)!.kernelFunc).toBe(kernels.mindSscKernelFunc);
      expect(tf.getKernel(RegkitMindSscGrad, backend)!.kernelFunc).toBe(
        kernels.mindSscGradKernelFunc,
      );
      expect(tf.getKernel(RegkitParzenJoint, backend)!.kernelFunc).toBe(
        kernels.parzenJointKernelFunc,
      );
      expect(tf.getKernel(RegkitParzenJointGrad, backend)!.kernelFunc).toBe(
        kernels.parzenJointGradKernelFunc,
      );
      expect(tf.getKernel(RegkitJacobianDet, backend)!.kernelFunc).toBe(
        kernels.jacobianDetKernelFunc,
      );
      expect(tf.getKernel(RegkitJacobianDetGrad, backend)!.kernelFunc).toBe(
        kernels.jacobianDetGradKernelFunc,
      );
      expect(tf.getKernel(RegkitLeakyReluGrad, backend)!.kernelFunc).toBe(
        kernels.leakyReluGradKernelFunc,
      );
      expect(tf.getKernel(RegkitMaxPool, backend)!.kernelFunc).toBe(kernels.maxPoolKernelFunc);
      expect(tf.getKernel(RegkitMaxPoolGrad, backend)!.kernelFunc).toBe(
        kernels.maxPoolGradKernelFunc,
      );
    }
    expect(kernels.KERNEL_NAMES).toEqual([
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
      ...kernels.ROW_KERNEL_NAMES,
      ...kernels.CONV_KERNEL_NAMES,
    ]);
    // the convolution, row and LeakyRelu kernels replace the stock ones (and core's on wasm)
    for (const backend of kernels.KERNEL_BACKENDS) {
      for (const k of replaced) {
        expect(tf.getKernel(k, backend)!.kernelFunc, `${backend}/${k}`).not.toBe(
          before[`${backend}/${k}`],
        );
      }
    }
  });
});
