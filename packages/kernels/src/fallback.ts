/**
 * Kernels that replace tfjs's own under the same name and hand the cases they do not cover
 * (other dtypes or data formats) to the kernel registered before them.
 */
import { tf } from '@regkit/core';

type KernelResult = tf.TensorInfo | tf.TensorInfo[];
/** A kernel function that may hand over to the previously registered kernel. */
export type Impl = (
  args: Parameters<tf.KernelFunc>[0],
  fallback: () => KernelResult,
) => KernelResult;

/** The kernel each of our kernel functions falls back to (the one registered before). */
const fallbacks = new WeakMap<tf.KernelFunc, tf.KernelFunc | undefined>();

/**
 * The config of `impl` for `kernelName` on `backendName`, falling back to the kernel
 * registered there now (or, when that is one of ours, to the one it falls back to), so that
 * configs made twice never fall back to each other. The config keeps that kernel's
 * `setupFunc` and `disposeFunc`. Register it with `replaceKernel`.
 */
export function configWithFallback(
  kernelName: string,
  backendName: string,
  impl: Impl,
): tf.KernelConfig {
  const before = tf.getKernel(kernelName, backendName);
  const registered = before?.kernelFunc;
  const prev = registered && fallbacks.has(registered) ? fallbacks.get(registered) : registered;
  const kernelFunc: tf.KernelFunc = (args) =>
    impl(args, () => {
      if (!prev) {
        throw new Error(
          `@regkit/kernels: ${kernelName} with these attributes is not supported by the WebAssembly kernels, and no other ${backendName} kernel was registered`,
        );
      }
      return prev(args);
    });
  fallbacks.set(kernelFunc, prev);
  // the stock wasm kernels bind their WebAssembly function in setupFunc, which tfjs runs for
  // the configs registered when the backend initialises: keep it (and disposeFunc) with ours
  return {
    kernelName,
    backendName,
    kernelFunc,
    setupFunc: before?.setupFunc,
    disposeFunc: before?.disposeFunc,
  };
}
