import { alongAxis } from './along_axis.js';
import { type KernelBackendLike, runFloatKernel } from './backend_io.js';
import { RegkitBoxSum, type RegkitBoxSumAttrs } from './kernel_names.js';
import { tf } from './tf.js';
import { assertImage, fail, perAxis } from './validate.js';
import { hasKernels } from './warp.js';

/**
 * Box sum along axis 0 of `[n, m]` by an exclusive prefix sum: out[i] = c[i + w] − c[i]
 * where c is the cumulative sum of x zero-padded by r + 1 rows before and r after.
 */
function boxRows(x: tf.Tensor, w: number): tf.Tensor {
  const [n, m] = x.shape as [number, number];
  const r = (w - 1) / 2;
  const c = tf.cumsum(
    tf.pad(x, [
      [r + 1, r],
      [0, 0],
    ]),
    0,
  );
  return tf.sub(tf.slice(c, [w, 0], [n, m]), tf.slice(c, [0, 0], [n, m]));
}

/** Box sum along one axis. */
function boxAlong(x: tf.Tensor, axis: number, w: number): tf.Tensor {
  return alongAxis(x, axis, (rows) => boxRows(rows, w));
}

/**
 * Portable box sum; its gradient is the box sum of dy (self-adjoint), given explicitly
 * because tfjs's Cumsum gradient returns a transposed shape for axis 0 of a 2D tensor.
 */
function boxSumComposite(x: tf.Tensor, window: number[]): tf.Tensor {
  const run = (t: tf.Tensor) => {
    let y = t;
    for (let k = 0; k < window.length; k++) if (window[k]! > 1) y = boxAlong(y, k + 1, window[k]!);
    return y;
  };
  return tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => ({
    value: run(args[0] as tf.Tensor),
    gradFunc: (dy: tf.Tensor | tf.Tensor[]) => run(dy as tf.Tensor),
  }))(x);
}

tf.registerGradient({
  kernelName: RegkitBoxSum,
  gradFunc: (dy, _saved, attrs) => {
    // a zero-padded centred box sum is self-adjoint
    const window = (attrs as unknown as RegkitBoxSumAttrs).window;
    return { x: () => boxSum(dy as tf.Tensor, window) };
  },
});

/**
 * Zero-padded 'same' box sum over the spatial axes of every channel:
 * out(x) = Σ_{|d_k| ≤ r_k} in(x + d), r_k = (w_k − 1)/2, values outside the image are 0.
 * The building block of local normalised cross-correlation (VoxelMorph/SITReg LNCC).
 * Exact in any window size at O(1) per voxel (separable running sums); differentiable
 * (its own adjoint). Runs the `RegkitBoxSum` kernel when the backend has one.
 *
 * @param x `[B, ...S, C]`.
 * @param window odd window size in voxels, one value or one per spatial axis.
 * @returns `[B, ...S, C]`.
 */
export function boxSum(x: tf.Tensor, window: number | readonly number[]): tf.Tensor {
  const fn = 'boxSum';
  const nd = assertImage(fn, 'x', x);
  const w = perAxis(fn, 'window', window, nd);
  if (w.some((v) => !Number.isInteger(v) || v < 1 || v % 2 === 0)) {
    fail(fn, `'window' must be odd positive integers, got ${JSON.stringify(window)}`);
  }
  return tf.tidy(() => {
    const xf = x.dtype === 'float32' ? x : tf.cast(x, 'float32');
    if (hasKernels(RegkitBoxSum)) {
      const attrs: RegkitBoxSumAttrs = { window: w };
      return tf
        .engine()
        .runKernel(RegkitBoxSum, { x: xf }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor;
    }
    return boxSumComposite(xf, w);
  });
}

/** Plain-JavaScript `RegkitBoxSum` for one backend: running sums in float64 along each axis. */
export function jsBoxSumKernel(backendName: string): tf.KernelConfig {
  return {
    kernelName: RegkitBoxSum,
    backendName,
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { x } = inputs as { x: tf.TensorInfo };
      const { window } = attrs as unknown as RegkitBoxSumAttrs;
      const shape = [...x.shape];
      return runFloatKernel(backend as KernelBackendLike, [x], [shape], ([input], [out]) => {
        out!.set(input!);
        const tmp = new Float64Array(Math.max(...shape));
        for (let k = 0; k < window.length; k++) {
          const w = window[k]!;
          if (w === 1) continue;
          const axis = k + 1;
          const n = shape[axis]!;
          const pre = shape.slice(0, axis).reduce((a, b) => a * b, 1);
          const post = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
          const r = (w - 1) / 2;
          for (let p = 0; p < pre; p++) {
            for (let q = 0; q < post; q++) {
              const base = p * n * post + q;
              // running window sum over [i - r, i + r] ∩ [0, n - 1]
              let s = 0;
              for (let i = 0; i < Math.min(r, n); i++) s += out![base + i * post]!;
              for (let i = 0; i < n; i++) {
                if (i + r < n) s += out![base + (i + r) * post]!;
                if (i - r - 1 >= 0) s -= out![base + (i - r - 1) * post]!;
                tmp[i] = s;
              }
              for (let i = 0; i < n; i++) out![base + i * post] = tmp[i]!;
            }
          }
        }
      })[0]!;
    },
  };
}
