import { type KernelBackendLike, runFloatKernel } from './backend_io.js';
import {
  type RegkitUpsampleAttrs,
  RegkitUpsampleNearest,
  RegkitUpsampleNearestGrad,
} from './kernel_names.js';
import { tf } from './tf.js';
import { assertTensor, fail, fmtShape } from './validate.js';
import { hasKernels } from './warp.js';

/**
 * Portable nearest upsampling: one spatial axis at a time, a rank-4 broadcast add
 * (`[P, n, 1, Q] + 0[1, 1, f, 1]`); stock `Tile` is ~100× slower on wasm.
 */
function upsampleComposite(x: tf.Tensor, factor: number): tf.Tensor {
  let y = x;
  const shape = [...x.shape];
  const zeros = tf.zeros([1, 1, factor, 1]);
  for (let axis = 1; axis < x.rank - 1; axis++) {
    const outer = shape.slice(0, axis).reduce((a, b) => a * b, 1);
    const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
    y = tf.add(tf.reshape(y, [outer, shape[axis]!, 1, inner]), zeros);
    shape[axis]! *= factor;
    y = tf.reshape(y, shape);
  }
  return y;
}

/** Visits every (input voxel, output voxel) pair of nearest upsampling by `f`. */
function forEachPair(
  inShape: readonly number[],
  f: number,
  visit: (inIndex: number, outIndex: number, channels: number) => void,
): void {
  const nd = inShape.length - 2;
  const [b, c] = [inShape[0]!, inShape[nd + 1]!];
  const inSp = inShape.slice(1, nd + 1);
  const outSp = inSp.map((s) => s * f);
  const outVox = outSp.reduce((a, v) => a * v, 1);
  const inVox = inSp.reduce((a, v) => a * v, 1);
  const coord = new Array<number>(nd).fill(0);
  for (let n = 0; n < b; n++) {
    coord.fill(0);
    for (let o = 0; o < outVox; o++) {
      let i = 0;
      for (let k = 0; k < nd; k++) i = i * inSp[k]! + Math.floor(coord[k]! / f);
      visit((n * inVox + i) * c, (n * outVox + o) * c, c);
      for (let k = nd - 1; k >= 0; k--) {
        if (++coord[k]! < outSp[k]!) break;
        coord[k] = 0;
      }
    }
  }
}

/** Plain-JavaScript `RegkitUpsampleNearest` and its gradient for one backend. */
export function jsUpsampleKernels(backendName: string): tf.KernelConfig[] {
  return [
    {
      kernelName: RegkitUpsampleNearest,
      backendName,
      kernelFunc: ({ inputs, backend, attrs }) => {
        const { x } = inputs as { x: tf.TensorInfo };
        const { factor } = attrs as unknown as RegkitUpsampleAttrs;
        const out = x.shape.map((s, i) => (i === 0 || i === x.shape.length - 1 ? s : s * factor));
        return runFloatKernel(backend as KernelBackendLike, [x], [out], ([src], [dst]) => {
          forEachPair(x.shape, factor, (i, o, c) => {
            for (let j = 0; j < c; j++) dst![o + j] = src![i + j]!;
          });
        })[0]!;
      },
    },
    {
      kernelName: RegkitUpsampleNearestGrad,
      backendName,
      kernelFunc: ({ inputs, backend, attrs }) => {
        const { dy } = inputs as { dy: tf.TensorInfo };
        const { factor } = attrs as unknown as RegkitUpsampleAttrs;
        const inShape = dy.shape.map((s, i) =>
          i === 0 || i === dy.shape.length - 1 ? s : s / factor,
        );
        return runFloatKernel(backend as KernelBackendLike, [dy], [inShape], ([g], [dx]) => {
          forEachPair(inShape, factor, (i, o, c) => {
            for (let j = 0; j < c; j++) dx![i + j]! += g![o + j]!;
          });
        })[0]!;
      },
    },
  ];
}

tf.registerGradient({
  kernelName: RegkitUpsampleNearest,
  gradFunc: (dy, _saved, attrs) => ({
    x: () => upsampleNearestGrad(dy as tf.Tensor, (attrs as unknown as RegkitUpsampleAttrs).factor),
  }),
});

/** Block sums of `dy`: the adjoint of nearest upsampling by `factor`. */
function upsampleNearestGrad(dy: tf.Tensor, factor: number): tf.Tensor {
  if (hasKernels(RegkitUpsampleNearestGrad)) {
    const attrs: RegkitUpsampleAttrs = { factor };
    return tf
      .engine()
      .runKernel(
        RegkitUpsampleNearestGrad,
        { dy },
        attrs as unknown as tf.NamedAttrMap,
      ) as tf.Tensor;
  }
  // portable: reshape to [B, n1, f, n2, f, (n3, f,) C] and sum the f axes
  const nd = dy.rank - 2;
  const split: number[] = [dy.shape[0]!];
  for (let k = 1; k <= nd; k++) split.push(dy.shape[k]! / factor, factor);
  split.push(dy.shape[nd + 1]!);
  const axes = Array.from({ length: nd }, (_, k) => 2 + 2 * k);
  return tf.sum(tf.reshape(dy, split), axes);
}

/**
 * Nearest-neighbour upsampling by an integer factor along every spatial axis (PyTorch's
 * `Upsample(scale_factor=f, mode='nearest')`): each voxel becomes an f×f(×f) block.
 * Runs core's `RegkitUpsampleNearest` kernel on cpu and wasm (its gradient sums the
 * blocks), a broadcast composite elsewhere.
 *
 * @param x `[B, H, W, C]` or `[B, D, H, W, C]`.
 * @returns `[B, fH, fW, C]` or `[B, fD, fH, fW, C]`.
 */
export function upsampleNearest(x: tf.Tensor, factor = 2): tf.Tensor {
  const fn = 'upsampleNearest';
  assertTensor(fn, 'x', x);
  if (x.rank !== 4 && x.rank !== 5) {
    fail(fn, `'x' must be [B, H, W, C] or [B, D, H, W, C], got ${fmtShape(x.shape)}`);
  }
  if (!Number.isInteger(factor) || factor < 1) {
    fail(fn, `'factor' must be a positive integer, got ${factor}`);
  }
  if (factor === 1) return tf.clone(x);
  return tf.tidy(() => {
    const xf = x.dtype === 'float32' ? x : tf.cast(x, 'float32');
    if (hasKernels(RegkitUpsampleNearest)) {
      const attrs: RegkitUpsampleAttrs = { factor };
      return tf
        .engine()
        .runKernel(
          RegkitUpsampleNearest,
          { x: xf },
          attrs as unknown as tf.NamedAttrMap,
        ) as tf.Tensor;
    }
    return upsampleComposite(xf, factor);
  });
}
