import {
  assertImagePair,
  boxSum,
  fail,
  hasKernels,
  perAxis,
  RegkitLocalNcc,
  type RegkitLocalNccAttrs,
  tf,
} from '@regkit/core';
import { registerLocalNccKernels } from './lncc_kernel.js';

/**
 * Global normalised cross-correlation loss: for each batch item and channel, with
 * a' = a − mean(a), b' = b − mean(b) over the voxels,
 *   ncc = Σ a'b' / sqrt(Σ a'² · Σ b'² + 1e−5),
 * and loss = −mean(ncc) over batch and channels (−1 for a perfect linear match).
 *
 * @param a `[B, ...S, C]`.
 * @param b same shape as `a`.
 * @returns scalar to minimise, in [−1, 1].
 */
export function globalNccLoss(a: tf.Tensor, b: tf.Tensor): tf.Scalar {
  const nd = assertImagePair('globalNccLoss', a, b);
  const axes = Array.from({ length: nd }, (_, k) => k + 1);
  return tf.tidy(() => {
    const ac = tf.sub(a, tf.mean(a, axes, true));
    const bc = tf.sub(b, tf.mean(b, axes, true));
    const num = tf.sum(tf.mul(ac, bc), axes);
    const den = tf.sqrt(
      tf.add(tf.mul(tf.sum(tf.square(ac), axes), tf.sum(tf.square(bc), axes)), 1e-5),
    );
    return tf.neg(tf.mean(tf.div(num, den))) as tf.Scalar;
  });
}

/** Options of {@link localNccLoss}. */
export interface LocalNccOptions {
  /** Odd window size in voxels, one value or one per spatial axis (default 9, as VoxelMorph). */
  window?: number | readonly number[];
}

/**
 * Local normalised cross-correlation loss, the VoxelMorph / SITReg definition, per channel:
 * with zero-padded 'same' box sums Σ over a window of n = Π w_k voxels,
 *   cross = Σab − ū Σa − ā Σb + ā ū n,  var_a = Σa² − 2ā Σa + ā² n  (ā = Σa/n, ū = Σb/n),
 *   cc = cross² / (var_a var_b + 1e−5),  loss = −mean(cc) over batch, voxels and channels.
 * Negative covariance is not clamped (cross is squared).
 *
 * While a gradient tape records (`tf.grads`, optimisers), the closed-form gradient with
 * respect to both images is computed together with the value and scaled by the seed in
 * backprop. On the cpu and wasm backends everything runs in one fused JavaScript kernel
 * (`RegkitLocalNcc`: float64 running box sums streamed over depth slices, ~10x faster than
 * tfjs ops; `@regkit/kernels` registers a WebAssembly-SIMD version of it); elsewhere, or with `REGKIT_PORTABLE_OPS`, it is composed of tfjs ops and
 * core's `boxSum` (exact, O(1) per voxel for any window). Inside nested tapes (gradients of
 * gradients) it falls back to the tfjs-op composite under autodiff.
 *
 * @param a `[B, ...S, C]`, e.g. the warped moving image.
 * @param b same shape as `a`, e.g. the fixed image.
 * @returns scalar to minimise, in [−1, 0].
 */
export function localNccLoss(a: tf.Tensor, b: tf.Tensor, options: LocalNccOptions = {}): tf.Scalar {
  const fn = 'localNccLoss';
  const nd = assertImagePair(fn, a, b);
  const window = perAxis(fn, 'window', options.window ?? 9, nd);
  if (window.some((w) => !Number.isInteger(w) || w < 1 || w % 2 === 0)) {
    fail(fn, `'window' must be odd positive integers, got ${JSON.stringify(options.window)}`);
  }
  registerLocalNccKernels();
  // read here: inside customGrad the tape is always off
  const engine = tf.engine();
  const taping = engine.isTapeOn();
  // nested tapes (a gradient of a gradient): plain autodiff, as the closed-form gradient
  // is not itself differentiable
  const closedForm = taping && engine.state.gradientDepth === 1;
  if (hasKernels(RegkitLocalNcc) && (closedForm || !taping)) {
    return localNccKernelPath(a, b, window, closedForm);
  }
  return localNccPortable(a, b, window, closedForm);
}

/**
 * A loss of (a, b) whose gradients are computed with its value: `compute` returns
 * [loss, ∂loss/∂a, ∂loss/∂b], the gradients are saved and scaled by the seed dy in backprop.
 * With `aliasUnitSeed` (cpu and wasm, where reading dy is free) a seed of exactly 1 returns
 * copy-free aliases of the saved gradients instead of a full-size multiplication.
 */
function withGradients(
  a: tf.Tensor,
  b: tf.Tensor,
  compute: (x: tf.Tensor, y: tf.Tensor) => [tf.Tensor, tf.Tensor, tf.Tensor],
  aliasUnitSeed: boolean,
): tf.Scalar {
  return tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const [loss, da, db] = compute(args[0] as tf.Tensor, args[1] as tf.Tensor);
    (args[2] as tf.GradSaveFunc)([da, db]);
    return {
      value: loss,
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
        const [sa, sb] = saved as [tf.Tensor, tf.Tensor];
        const d = dy as tf.Tensor;
        if (aliasUnitSeed && d.size === 1 && d.dataSync()[0] === 1) {
          return [tf.reshape(sa, sa.shape), tf.reshape(sb, sb.shape)];
        }
        return [tf.mul(sa, d), tf.mul(sb, d)];
      },
    };
  })(a, b) as tf.Scalar;
}

/** The fused kernel; while the tape records, it also computes the gradients (for dy = 1). */
function localNccKernelPath(
  a: tf.Tensor,
  b: tf.Tensor,
  window: number[],
  withGrad: boolean,
): tf.Scalar {
  const run = (x: tf.Tensor, y: tf.Tensor, grad: boolean) => {
    const attrs: RegkitLocalNccAttrs = { window, withGrad: grad };
    return tf
      .engine()
      .runKernel(
        RegkitLocalNcc,
        { a: x, b: y },
        attrs as unknown as tf.NamedAttrMap,
      ) as tf.Tensor[];
  };
  return tf.tidy(() => {
    const af = a.dtype === 'float32' ? a : tf.cast(a, 'float32');
    const bf = b.dtype === 'float32' ? b : tf.cast(b, 'float32');
    if (!withGrad) return run(af, bf, false)[0] as tf.Scalar;
    return withGradients(
      af,
      bf,
      (x, y) => run(x, y, true) as [tf.Tensor, tf.Tensor, tf.Tensor],
      true,
    );
  });
}

/**
 * Composite of tfjs ops and core's boxSum (one call for the five maps). While the tape
 * records, the closed-form gradient (see lncc_kernel.ts) is computed with the value, with
 * a second boxSum call for the five coefficient maps, instead of autodiff through ~20 ops.
 */
function localNccPortable(
  a: tf.Tensor,
  b: tf.Tensor,
  window: number[],
  closedForm: boolean,
): tf.Scalar {
  const n = window.reduce((p, q) => p * q, 1);
  // box sums of the five maps, stacked along the batch axis for one boxSum call
  // (contiguous; splitting along the channel axis is ~25x slower on wasm)
  const stackedBoxSums = (maps: tf.Tensor[]) =>
    tf.split(boxSum(tf.concat(maps, 0), window), maps.length, 0);
  const terms = (x: tf.Tensor, y: tf.Tensor) => {
    const [sa, sb, saa, sbb, sab] = stackedBoxSums([
      x,
      y,
      tf.square(x),
      tf.square(y),
      tf.mul(x, y),
    ]) as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor];
    const ma = tf.div(sa, n);
    const mb = tf.div(sb, n);
    const cross = tf.add(
      tf.sub(tf.sub(sab, tf.mul(mb, sa)), tf.mul(ma, sb)),
      tf.mul(tf.mul(ma, mb), n),
    );
    const varA = tf.add(tf.sub(saa, tf.mul(tf.mul(ma, sa), 2)), tf.mul(tf.square(ma), n));
    const varB = tf.add(tf.sub(sbb, tf.mul(tf.mul(mb, sb), 2)), tf.mul(tf.square(mb), n));
    const den = tf.add(tf.mul(varA, varB), 1e-5);
    const cc = tf.div(tf.square(cross), den);
    return { sa, sb, cross, varA, varB, den, cc };
  };
  return tf.tidy(() => {
    const af = a.dtype === 'float32' ? a : tf.cast(a, 'float32');
    const bf = b.dtype === 'float32' ? b : tf.cast(b, 'float32');
    if (!closedForm) return tf.neg(tf.mean(terms(af, bf).cc)) as tf.Scalar;
    return withGradients(
      af,
      bf,
      (x, y) => {
        const { sa, sb, cross, varA, varB, den, cc } = terms(x, y);
        // ∂cc/∂[S_ab, S_aa, S_bb, S_a, S_b], scaled by ∂loss/∂cc = −1 / size
        const g = -1 / x.size;
        const alpha = tf.div(tf.mul(cross, 2 * g), den);
        const ccOverDen = tf.div(tf.mul(cc, -g), den);
        const beta = tf.mul(ccOverDen, varB);
        const gamma = tf.mul(ccOverDen, varA);
        const dSa = tf.div(tf.neg(tf.add(tf.mul(alpha, sb), tf.mul(tf.mul(beta, sa), 2))), n);
        const dSb = tf.div(tf.neg(tf.add(tf.mul(alpha, sa), tf.mul(tf.mul(gamma, sb), 2))), n);
        // the zero-padded centred box sum is self-adjoint
        const [bAlpha, bBeta, bGamma, bSa, bSb] = stackedBoxSums([
          alpha,
          beta,
          gamma,
          dSa,
          dSb,
        ]) as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor];
        const da = tf.add(tf.add(bSa, tf.mul(tf.mul(x, 2), bBeta)), tf.mul(y, bAlpha));
        const db = tf.add(tf.add(bSb, tf.mul(tf.mul(y, 2), bGamma)), tf.mul(x, bAlpha));
        return [tf.neg(tf.mean(cc)), da, db];
      },
      false,
    );
  });
}
