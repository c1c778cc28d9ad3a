import { type KernelBackendLike, runFloatKernel } from './backend_io.js';
import { registerGradientKernel } from './kernel_gradient.js';
import { RegkitMaxPool, type RegkitMaxPoolAttrs, RegkitMaxPoolGrad } from './kernel_names.js';
import type { tf } from './tf.js';

/**
 * For every output voxel of `size`-pooling of `inShape` (sizes divisible by `size`), the flat
 * index of the first maximum of its window in `x`.
 */
function argmaxWindows(x: Float32Array, inShape: readonly number[], size: number): Int32Array {
  const nd = inShape.length - 2;
  const [b, c] = [inShape[0]!, inShape[nd + 1]!];
  const inSp = inShape.slice(1, nd + 1);
  const outSp = inSp.map((s) => s / size);
  const outVox = outSp.reduce((a, v) => a * v, 1);
  const inVox = inSp.reduce((a, v) => a * v, 1);
  const strides = inSp.map((_, k) => inSp.slice(k + 1).reduce((a, v) => a * v, 1) * c);
  // offsets of the window's voxels relative to its first voxel
  const win = size ** nd;
  const offsets = new Int32Array(win);
  for (let w = 0; w < win; w++) {
    let rest = w;
    let off = 0;
    for (let k = nd - 1; k >= 0; k--) {
      off += (rest % size) * strides[k]!;
      rest = Math.floor(rest / size);
    }
    offsets[w] = off;
  }
  const out = new Int32Array(b * outVox * c);
  const coord = new Array<number>(nd).fill(0);
  for (let n = 0; n < b; n++) {
    coord.fill(0);
    for (let o = 0; o < outVox; o++) {
      let base = n * inVox * c;
      for (let k = 0; k < nd; k++) base += coord[k]! * size * strides[k]!;
      const ob = (n * outVox + o) * c;
      for (let j = 0; j < c; j++) {
        let best = base + j + offsets[0]!;
        let bv = x[best]!;
        for (let w = 1; w < win; w++) {
          const i = base + j + offsets[w]!;
          if (x[i]! > bv || Number.isNaN(x[i]!)) {
            bv = x[i]!;
            best = i;
          }
        }
        out[ob + j] = best;
      }
      for (let k = nd - 1; k >= 0; k--) {
        if (++coord[k]! < outSp[k]!) break;
        coord[k] = 0;
      }
    }
  }
  return out;
}

/** Plain-JavaScript `RegkitMaxPool` and its gradient for one backend. */
export function jsMaxPoolKernels(backendName: string): tf.KernelConfig[] {
  return [
    {
      kernelName: RegkitMaxPool,
      backendName,
      kernelFunc: ({ inputs, backend, attrs }) => {
        const { x } = inputs as { x: tf.TensorInfo };
        const { size } = attrs as unknown as RegkitMaxPoolAttrs;
        const out = x.shape.map((s, i) => (i === 0 || i === x.shape.length - 1 ? s : s / size));
        return runFloatKernel(backend as KernelBackendLike, [x], [out], ([src], [dst]) => {
          const idx = argmaxWindows(src!, x.shape, size);
          for (let i = 0; i < idx.length; i++) dst![i] = src![idx[i]!]!;
        })[0]!;
      },
    },
    {
      kernelName: RegkitMaxPoolGrad,
      backendName,
      kernelFunc: ({ inputs, backend, attrs }) => {
        const { dy, x } = inputs as { dy: tf.TensorInfo; x: tf.TensorInfo };
        const { size } = attrs as unknown as RegkitMaxPoolAttrs;
        return runFloatKernel(
          backend as KernelBackendLike,
          [dy, x],
          [[...x.shape]],
          ([g, src], [dx]) => {
            const idx = argmaxWindows(src!, x.shape, size);
            for (let i = 0; i < idx.length; i++) dx![idx[i]!]! += g![i]!;
          },
        )[0]!;
      },
    },
  ];
}

registerGradientKernel(RegkitMaxPool, RegkitMaxPoolGrad);
