import { tf } from './tf.js';

/** A `[rows, cols]` row-major matrix mapping an axis of size `cols` to size `rows`. */
export interface AxisMatrix {
  values: Float32Array;
  rows: number;
}

function transposed(values: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++)
    for (let j = 0; j < cols; j++) out[j * rows + i] = values[i * cols + j]!;
  return out;
}

/** `a` (`[rows, cols]`, values and their transpose) applied along `axis` of `y`. */
function alongAxis(
  y: tf.Tensor,
  axis: number,
  a: Float32Array,
  aT: Float32Array,
  rows: number,
): tf.Tensor {
  const shape = [...y.shape];
  const cols = shape[axis]!;
  const outer = shape.slice(0, axis).reduce((p, q) => p * q, 1);
  const inner = shape.slice(axis + 1).reduce((p, q) => p * q, 1);
  let out: tf.Tensor;
  if (outer === 1) {
    // the axis leads: A · X with X [cols, inner]
    out = tf.matMul(tf.tensor2d(a, [rows, cols]), tf.reshape(y, [cols, inner]));
  } else {
    // X [outer, cols, inner] → [outer · inner, cols] · Aᵀ: one large product (batched small
    // products with a broadcast matrix are slow on cpu and wasm)
    const moved = tf.transpose(tf.reshape(y, [outer, cols, inner]), [0, 2, 1]);
    const mapped = tf.matMul(
      tf.reshape(moved, [outer * inner, cols]),
      tf.tensor2d(aT, [cols, rows]),
    );
    out = tf.transpose(tf.reshape(mapped, [outer, inner, rows]), [0, 2, 1]);
  }
  shape[axis] = rows;
  return tf.reshape(out, shape);
}

/**
 * Applies a linear map along each spatial axis of `x` (`[B, ...S, C]`, float32): axis k
 * (spatial, from 0) becomes `matrices[k] · x` along it, `matrices[k]` being `[S'_k, S_k]`, or
 * `null` to leave the axis alone. One matrix product per axis (the axis moved last by a
 * transpose unless it leads); the gradient applies the transposed matrices in reverse order
 * (explicitly transposed: tfjs's `MatMul` with a transpose flag is ~8× slower on wasm).
 * Smoothing along short axes is such a map (`gaussianSmooth`).
 */
export function mapAlongAxes(x: tf.Tensor, matrices: ReadonlyArray<AxisMatrix | null>): tf.Tensor {
  const steps: Array<{
    axis: number;
    a: Float32Array;
    aT: Float32Array;
    rows: number;
    cols: number;
  }> = [];
  let spatial = x.shape.slice(1, 1 + matrices.length);
  matrices.forEach((m, k) => {
    if (!m) return;
    const cols = spatial[k]!;
    steps.push({
      axis: k + 1,
      a: m.values,
      aT: transposed(m.values, m.rows, cols),
      rows: m.rows,
      cols,
    });
    spatial = spatial.map((s, j) => (j === k ? m.rows : s));
  });
  if (steps.length === 0) return tf.clone(x);
  // last axis first: the transposes of the inner axes then act on the smaller, not yet
  // upsampled tensor, and the leading axis (no transposes) goes last
  steps.reverse();
  // one tidy per axis, freeing the previous axis's result: only two tensors of the chain are
  // alive at a time (inside a gradient, tfjs would otherwise keep every intermediate until
  // the whole backward pass ends: 3 copies per axis of a field at the finest level)
  const chain = (t: tf.Tensor, order: typeof steps, inverse: boolean): tf.Tensor =>
    order.reduce((y, s) => {
      const out = tf.tidy(() =>
        inverse ? alongAxis(y, s.axis, s.aT, s.a, s.cols) : alongAxis(y, s.axis, s.a, s.aT, s.rows),
      );
      if (y !== t) y.dispose();
      return out;
    }, t);
  const backwards = [...steps].reverse();
  const map = tf.customGrad((input) => ({
    value: chain(input as tf.Tensor, steps, false),
    gradFunc: (dy: tf.Tensor) => chain(dy, backwards, true),
  }));
  return tf.tidy(() => map(x));
}
