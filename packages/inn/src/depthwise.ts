import { assertTensor, fail, fmtShape, tf } from '@regkit/core';

const range = (n: number, from = 0) => Array.from({ length: n }, (_, i) => i + from);

/**
 * Σ_n Σ_p xPadded[n, p + o, c] · dy[n, p, c] for every offset o `[k, k, C, 1]` — the filter
 * gradient of a 'same' depthwise convolution — as one forward depthwise convolution with
 * dy as the filter ('valid', output k×k). The N images are tiled side by side along W first
 * (dy with 2P zero columns after each image), so one shared "filter" sums over the batch.
 * tfjs's own DepthwiseConv2dNativeBackpropFilter takes seconds (9 s for a [1, 64, 64, 130]
 * input and a 7×7 kernel on cpu and wasm; this: 70 ms on wasm, 200 ms on cpu).
 */
function depthwiseFilterGrad(x: tf.Tensor4D, dy: tf.Tensor4D, k: number): tf.Tensor4D {
  const [n, h, w, c] = x.shape;
  const p = (k - 1) / 2;
  const wp = w + 2 * p;
  let image: tf.Tensor4D = tf.pad(x, [
    [0, 0],
    [p, p],
    [p, p],
    [0, 0],
  ]);
  let filter: tf.Tensor = dy;
  if (n > 1) {
    // [N, H + 2P, W + 2P, C] → [1, H + 2P, N·(W + 2P), C]
    image = tf.reshape(tf.transpose(image, [1, 0, 2, 3]), [1, h + 2 * p, n * wp, c]);
    const spaced = tf.transpose(
      tf.pad(dy, [
        [0, 0],
        [0, 0],
        [0, 2 * p],
        [0, 0],
      ]),
      [1, 0, 2, 3],
    );
    filter = tf.slice(tf.reshape(spaced, [h, n * wp, c]), [0, 0, 0], [h, n * wp - 2 * p, c]);
  }
  const fh = filter.shape[filter.rank - 3]!;
  const fw = filter.shape[filter.rank - 2]!;
  const g = tf.depthwiseConv2d(
    image,
    tf.reshape(filter, [fh, fw, c, 1]) as tf.Tensor4D,
    1,
    'valid',
  );
  return tf.reshape(g, [k, k, c, 1]);
}

/**
 * The 5-tap window of a 7- or 9-tap kernel along `axis`: `first` takes taps [0, 5), the
 * other the taps [5, k) placed at the end of the window (taps [k − 5, 5) zeroed, so the two
 * windows count every tap once).
 */
function kernelWindow(w: tf.Tensor4D, axis: 0 | 1, first: boolean): tf.Tensor4D {
  const k = w.shape[axis];
  const begin = [0, 0, 0, 0];
  const size = [...w.shape];
  if (first) size[axis] = 5;
  else {
    begin[axis] = 5;
    size[axis] = k - 5;
  }
  const taps = tf.slice(w, begin, size);
  if (first) return taps;
  const pad: Array<[number, number]> = [
    [0, 0],
    [0, 0],
    [0, 0],
    [0, 0],
  ];
  pad[axis] = [10 - k, 0];
  return tf.pad(taps, pad);
}

/**
 * tf.depthwiseConv2d 'same' (odd k). On wasm a 7×7 or 9×9 kernel runs as four 5×5
 * depthwise convolutions of the input padded by P − 2, shifted and summed: XNNPACK (tfjs
 * 4.22) has fast depthwise kernels up to 25 taps only, and this halves the time (62 → 34 ms
 * for a [1, 64, 64, 130] input and a 7×7 kernel). Other backends take more time per tap
 * and run the kernel directly.
 */
function depthwiseConvSame(x: tf.Tensor4D, w: tf.Tensor4D): tf.Tensor4D {
  const k = w.shape[0];
  if ((k !== 7 && k !== 9) || tf.getBackend() !== 'wasm')
    return tf.depthwiseConv2d(x, w, 1, 'same');
  const [n, h, wd, c] = x.shape;
  // window centres at offsets ∓(P − 2) from the kernel centre
  const s = (k - 1) / 2 - 2;
  const padded = tf.pad(x, [
    [0, 0],
    [s, s],
    [s, s],
    [0, 0],
  ]);
  const parts: tf.Tensor[] = [];
  for (const rows of [true, false]) {
    for (const cols of [true, false]) {
      const sub = kernelWindow(kernelWindow(w, 0, rows), 1, cols);
      const z = tf.depthwiseConv2d(padded, sub, 1, 'same');
      parts.push(tf.slice(z, [0, rows ? 0 : 2 * s, cols ? 0 : 2 * s, 0], [n, h, wd, c]));
    }
  }
  return tf.addN(parts) as tf.Tensor4D;
}

/**
 * 'same' depthwise convolution (odd k, stride 1) of `x` `[N, H, W, C]` with one filter
 * `[k, k, C, 1]` shared by the batch, with fast gradients: dx = the same convolution of dy
 * with the filter rotated by 180°, dfilter = {@link depthwiseFilterGrad}.
 */
function depthwiseConvFastGrad(x: tf.Tensor4D, filter: tf.Tensor4D): tf.Tensor4D {
  const k = filter.shape[0];
  const op = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const [xs, fs, save] = args as [tf.Tensor4D, tf.Tensor4D, tf.GradSaveFunc];
    save([xs, fs]);
    return {
      value: depthwiseConvSame(xs, fs),
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [sx, sf] = saved as [tf.Tensor4D, tf.Tensor4D];
        const d = dy as tf.Tensor4D;
        return [depthwiseConvSame(d, tf.reverse(sf, [0, 1])), depthwiseFilterGrad(sx, d, k)];
      },
    };
  });
  return op(x, filter) as tf.Tensor4D;
}

/**
 * Depthwise convolution with a different kernel for every batch item (the convolution of a
 * dynamic depthwise convolution), zero 'same' padding, stride 1:
 *
 *   y[b, p, c] = Σ_o kernels[b, o, c] · x[b, p + o − (k − 1)/2, c]  (+ bias[c])
 *
 * over the k^ndim offsets o (cross-correlation, as PyTorch's `conv2d`/`conv3d` with
 * `groups = channels` and `padding = k // 2`).
 *
 * The batch is folded into the channels (`[B, ...S, C]` → `[1, ...S, B·C]`, one transpose
 * each way when B > 1), so one depthwise convolution serves every sample. 2D runs
 * `tf.depthwiseConv2d`; tfjs has no 3D depthwise convolution, so 3D runs k depthwise 2D
 * convolutions, one per depth offset, on depth-shifted slices of the folded volume (depth
 * as the batch axis) and sums them. Differentiable with respect to `x`, `kernels` and `bias`;
 * the depthwise convolutions have their own gradients (tfjs's filter gradient is
 * ~100× slower, see `depthwiseFilterGrad`).
 *
 * @param x image `[B, ...S, C]`, S = `[H, W]` or `[D, H, W]`
 * @param kernels `[B, ...k, C]`, k odd, the same along every axis
 * @param bias optional `[C]`
 * @returns `[B, ...S, C]`
 */
export function depthwiseConvPerSample(
  x: tf.Tensor,
  kernels: tf.Tensor,
  bias?: tf.Tensor | null,
): tf.Tensor {
  const fn = 'depthwiseConvPerSample';
  assertTensor(fn, 'x', x);
  assertTensor(fn, 'kernels', kernels);
  if (x.rank !== 4 && x.rank !== 5) {
    fail(fn, `'x' must be [B, H, W, C] or [B, D, H, W, C], got ${fmtShape(x.shape)}`);
  }
  const nd = x.rank - 2;
  const [b, c] = [x.shape[0]!, x.shape[x.rank - 1]!];
  const k = kernels.shape[1]!;
  if (
    kernels.rank !== x.rank ||
    kernels.shape[0] !== b ||
    kernels.shape[kernels.rank - 1] !== c ||
    kernels.shape.slice(1, -1).some((s) => s !== k) ||
    k % 2 !== 1
  ) {
    fail(
      fn,
      `'kernels' must be [${b}, ${new Array(nd).fill('k').join(', ')}, ${c}] with one odd k, got ${fmtShape(kernels.shape)}`,
    );
  }
  if (bias) {
    assertTensor(fn, 'bias', bias);
    if (bias.rank !== 1 || bias.shape[0] !== c) {
      fail(fn, `'bias' must be [${c}], got ${fmtShape(bias.shape)}`);
    }
  }
  return tf.tidy(() => {
    const spatial = x.shape.slice(1, -1);
    // [B, ...S, C] → [...S, B·C]: batch folded into channels
    const toFolded = range(nd, 1).concat([0, nd + 1]);
    const fold = (t: tf.Tensor, s: number[]) =>
      tf.reshape(b === 1 ? t : tf.transpose(t, toFolded), [...s, b * c]);
    const xf = fold(x, spatial);
    const kf = fold(kernels, new Array<number>(nd).fill(k));
    let y: tf.Tensor;
    if (nd === 2) {
      y = depthwiseConvFastGrad(
        tf.reshape(xf, [1, spatial[0]!, spatial[1]!, b * c]) as tf.Tensor4D,
        tf.reshape(kf, [k, k, b * c, 1]) as tf.Tensor4D,
      );
    } else {
      // depth as the batch of a 2D depthwise convolution, one per depth offset
      const [d, h, w] = spatial as [number, number, number];
      const p = (k - 1) / 2;
      const padded =
        p > 0
          ? tf.pad(xf, [
              [p, p],
              [0, 0],
              [0, 0],
              [0, 0],
            ])
          : xf;
      const parts: tf.Tensor[] = [];
      for (let dz = 0; dz < k; dz++) {
        const slab = tf.slice(padded, [dz, 0, 0, 0], [d, h, w, b * c]) as tf.Tensor4D;
        const taps = tf.reshape(tf.slice(kf, [dz, 0, 0, 0], [1, k, k, b * c]), [k, k, b * c, 1]);
        parts.push(depthwiseConvFastGrad(slab, taps as tf.Tensor4D));
      }
      y = parts.length === 1 ? parts[0]! : tf.addN(parts);
    }
    // [...S, B·C] → [B, ...S, C]
    let out =
      b === 1
        ? tf.reshape(y, [1, ...spatial, c])
        : tf.transpose(tf.reshape(y, [...spatial, b, c]), [nd].concat(range(nd), [nd + 1]));
    if (bias) out = tf.add(out, bias);
    return out;
  });
}
