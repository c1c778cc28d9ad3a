/**
 * The portable composite behind `warp` (used on backends without a registered
 * `RegkitWarp` kernel, or with `tf.env().set('REGKIT_PORTABLE_OPS', true)`): reads an
 * image at x + u(x) with linear or nearest interpolation, voxel centres at integer
 * positions (torch `grid_sample(..., align_corners=True)`).
 *
 * One flat `gather` of all 2^ndim corners with float interpolation weights, wrapped in
 * `tf.customGrad`; the image gradient is a `scatterND` (which sums duplicate indices)
 * and the field gradient uses the derivative of the weights. tfjs's own `gather`
 * gradient (UnsortedSegmentSum) is avoided: it is quadratic on the stock cpu backend.
 */
import { tf } from './tf.js';

/** Interpolation of `warp`: `'linear'` (bi/trilinear) or `'nearest'` (label maps). */
export type Interpolation = 'linear' | 'nearest';
/** Out-of-range handling: `'zeros'` (each outside corner contributes 0) or `'border'` (clamped coordinates). */
export type Padding = 'zeros' | 'border';

interface Geometry {
  batch: number;
  spatial: number[];
  channels: number;
  outSpatial: number[];
  strides: number[];
  voxels: number;
  outVoxels: number;
}

function geometry(imageShape: number[], outSpatial: number[]): Geometry {
  const nd = imageShape.length - 2;
  const spatial = imageShape.slice(1, 1 + nd);
  const strides = spatial.map((_, k) => spatial.slice(k + 1).reduce((a, b) => a * b, 1));
  return {
    batch: imageShape[0]!,
    spatial,
    channels: imageShape[imageShape.length - 1]!,
    outSpatial,
    strides,
    voxels: spatial.reduce((a, b) => a * b, 1),
    outVoxels: outSpatial.reduce((a, b) => a * b, 1),
  };
}

/** Positions x_k + u_k(x) along each axis, each `[B, N]` (N = output voxels). */
function positions(g: Geometry, field: tf.Tensor): tf.Tensor2D[] {
  const nd = g.spatial.length;
  const out: tf.Tensor2D[] = [];
  // components as contiguous rows: unstacking the last axis directly is ~100x slower on wasm
  const comps = tf
    .unstack(tf.transpose(tf.reshape(field, [g.batch * g.outVoxels, nd]), [1, 0]), 0)
    .map((c) => tf.reshape(c, [g.batch, ...g.outSpatial]));
  for (let k = 0; k < nd; k++) {
    const bshape = g.outSpatial.map((s, j) => (j === k ? s : 1));
    const base = tf.reshape(tf.range(0, g.outSpatial[k]!, 1, 'float32'), [1, ...bshape]);
    out.push(tf.reshape(tf.add(base, comps[k]!), [g.batch, g.outVoxels]));
  }
  return out;
}

/**
 * Flat-index arithmetic runs in float32 when every index is below 2^24 (exact there, and
 * broadcasting float adds are ~10x faster than int32 ones on wasm), else in int32.
 */
function indexDtype(g: Geometry): 'float32' | 'int32' {
  return g.batch * g.voxels < 2 ** 24 ? 'float32' : 'int32';
}

function batchOffsets(g: Geometry): tf.Tensor {
  const dtype = indexDtype(g);
  return tf.reshape(tf.mul(tf.range(0, g.batch, 1, dtype), tf.scalar(g.voxels, dtype)), [
    g.batch,
    1,
  ]);
}

/** Reshapes a per-axis `[2, B, N]` tensor so the 2^nd corners combine by broadcasting. */
function cornerAxis(t: tf.Tensor, k: number, nd: number): tf.Tensor {
  const shape = new Array<number>(nd).fill(1);
  shape[k] = 2;
  return tf.reshape(t, [...shape, ...t.shape.slice(1)]);
}

interface LinearTerms {
  /** Corner weights `[2^nd, B*N]` (validity included). */
  weights: tf.Tensor;
  /** Flat corner indices `[2^nd * B * N]` int32 into the `[B * M, C]` image. */
  indices: tf.Tensor;
  /** d weights / d p_k for each axis k, each `[2^nd, B*N]` (null unless requested). */
  dWeights: tf.Tensor[] | null;
}

function linearTerms(
  g: Geometry,
  p: tf.Tensor2D[],
  padding: Padding,
  withDerivative: boolean,
): LinearTerms {
  const nd = g.spatial.length;
  const dtype = indexDtype(g);
  const F: tf.Tensor[] = [];
  const D: tf.Tensor[] = [];
  let index: tf.Tensor = batchOffsets(g);
  for (let k = 0; k < nd; k++) {
    const hi = g.spatial[k]! - 1;
    let pk: tf.Tensor = p[k]!;
    let inRange: tf.Tensor | null = null;
    if (padding === 'border') {
      inRange = tf.cast(tf.logicalAnd(tf.greaterEqual(pk, 0), tf.lessEqual(pk, hi)), 'float32');
      pk = tf.clipByValue(pk, 0, hi);
    }
    const f = tf.floor(pk);
    const f1 = tf.add(f, 1);
    const t = tf.sub(pk, f);
    let w0: tf.Tensor = tf.sub(1, t);
    let w1: tf.Tensor = t;
    let d0: tf.Tensor = tf.fill(t.shape, -1);
    let d1: tf.Tensor = tf.onesLike(t);
    if (padding === 'zeros') {
      // each corner outside the image contributes 0 (grid_sample padding_mode='zeros')
      const v0 = tf.cast(tf.logicalAnd(tf.greaterEqual(f, 0), tf.lessEqual(f, hi)), 'float32');
      const v1 = tf.cast(tf.logicalAnd(tf.greaterEqual(f1, 0), tf.lessEqual(f1, hi)), 'float32');
      w0 = tf.mul(w0, v0);
      w1 = tf.mul(w1, v1);
      d0 = tf.neg(v0);
      d1 = v1;
    } else if (inRange) {
      // clamped coordinates do not move with the field outside the image
      d0 = tf.neg(inRange);
      d1 = inRange;
    }
    // clamp in float32 before any cast: wasm ClipByValue is float-only
    const i0 = tf.cast(tf.clipByValue(f, 0, hi), dtype);
    const i1 = tf.cast(tf.clipByValue(f1, 0, hi), dtype);
    F.push(cornerAxis(tf.stack([w0, w1]), k, nd));
    D.push(cornerAxis(tf.stack([d0, d1]), k, nd));
    const stride = tf.scalar(g.strides[k]!, dtype);
    index = tf.add(index, cornerAxis(tf.stack([tf.mul(i0, stride), tf.mul(i1, stride)]), k, nd));
  }
  const flatShape = [2 ** nd, g.batch * g.outVoxels];
  const product = (factors: tf.Tensor[]) =>
    tf.reshape(
      factors.reduce((a, b) => tf.mul(a, b)),
      flatShape,
    );
  const weights = product(F);
  const dWeights = withDerivative
    ? D.map((dk, k) => product(F.map((fk, j) => (j === k ? dk : fk))))
    : null;
  return { weights, indices: tf.cast(tf.reshape(index, [-1]), 'int32'), dWeights };
}

interface NearestTerms {
  valid: tf.Tensor; // [B*N, 1]
  indices: tf.Tensor; // [B*N]
}

function nearestTerms(g: Geometry, p: tf.Tensor2D[], padding: Padding): NearestTerms {
  const nd = g.spatial.length;
  let index: tf.Tensor = batchOffsets(g);
  let valid: tf.Tensor | null = null;
  for (let k = 0; k < nd; k++) {
    const hi = g.spatial[k]! - 1;
    let pk: tf.Tensor = p[k]!;
    if (padding === 'border') pk = tf.clipByValue(pk, 0, hi);
    const r = tf.round(pk); // round half to even, as torch nearbyint
    if (padding === 'zeros') {
      const v = tf.logicalAnd(tf.greaterEqual(r, 0), tf.lessEqual(r, hi));
      valid = valid ? tf.logicalAnd(valid, v) : v;
    }
    const dtype = indexDtype(g);
    const ri = tf.cast(tf.clipByValue(r, 0, hi), dtype);
    index = tf.add(index, tf.mul(ri, tf.scalar(g.strides[k]!, dtype)));
  }
  const v = valid ? tf.cast(valid, 'float32') : tf.ones([g.batch, g.outVoxels]);
  return { valid: tf.reshape(v, [-1, 1]), indices: tf.cast(tf.reshape(index, [-1]), 'int32') };
}

/** Forward sampling; for linear interpolation also returns the gathered corner values `[2^nd, B*N, C]` (reused by the field gradient). */
function sampleForward(
  image: tf.Tensor,
  field: tf.Tensor,
  g: Geometry,
  interpolation: Interpolation,
  padding: Padding,
): { out: tf.Tensor; vals?: tf.Tensor } {
  return tf.tidy((): { out: tf.Tensor; vals?: tf.Tensor } => {
    const p = positions(g, field);
    const flat = tf.reshape(image, [g.batch * g.voxels, g.channels]);
    if (interpolation === 'linear') {
      const { weights, indices } = linearTerms(g, p, padding, false);
      const vals = tf.reshape(tf.gather(flat, indices), [2 ** g.spatial.length, -1, g.channels]);
      const out = tf.sum(tf.mul(vals, tf.expandDims(weights, -1)), 0);
      return { out: tf.reshape(out, [g.batch, ...g.outSpatial, g.channels]), vals };
    }
    const { valid, indices } = nearestTerms(g, p, padding);
    const out = tf.mul(tf.gather(flat, indices), valid);
    return { out: tf.reshape(out, [g.batch, ...g.outSpatial, g.channels]) };
  });
}

function sampleBackward(
  dy: tf.Tensor,
  image: tf.Tensor,
  field: tf.Tensor,
  vals: tf.Tensor | undefined,
  g: Geometry,
  interpolation: Interpolation,
  padding: Padding,
): [tf.Tensor, tf.Tensor] {
  return tf.tidy((): [tf.Tensor, tf.Tensor] => {
    const nd = g.spatial.length;
    const p = positions(g, field);
    const dyFlat = tf.reshape(dy, [-1, g.channels]);
    const imageRows = [g.batch * g.voxels, g.channels];
    if (interpolation === 'nearest') {
      const { valid, indices } = nearestTerms(g, p, padding);
      const dImage = tf.scatterND(tf.expandDims(indices, 1), tf.mul(dyFlat, valid), imageRows);
      return [tf.reshape(dImage, image.shape), tf.zerosLike(field)];
    }
    const { weights, indices, dWeights } = linearTerms(g, p, padding, true);
    const corners = 2 ** nd;
    const updates = tf.reshape(tf.mul(tf.expandDims(weights, -1), tf.expandDims(dyFlat, 0)), [
      -1,
      g.channels,
    ]);
    const dImage = tf.reshape(
      tf.scatterND(tf.expandDims(indices, 1), updates, imageRows),
      image.shape,
    );
    const v =
      vals ??
      tf.reshape(tf.gather(tf.reshape(image, imageRows), indices), [corners, -1, g.channels]);
    const G = tf.sum(tf.mul(v, tf.expandDims(dyFlat, 0)), -1); // [2^nd, B*N]
    const dp = dWeights!.map((dw) => tf.sum(tf.mul(dw, G), 0));
    return [dImage, tf.reshape(tf.stack(dp, 1), field.shape)];
  });
}

/**
 * Portable warp: samples `image` `[B, ...S, C]` (float32) at x + field(x), field
 * `[B, ...So, nd]` (float32), giving `[B, ...So, C]`. Differentiable in both inputs.
 */
export function warpComposite(
  image: tf.Tensor,
  field: tf.Tensor,
  interpolation: Interpolation,
  padding: Padding,
): tf.Tensor {
  const g = geometry(image.shape, field.shape.slice(1, -1));
  const fn = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const [img, u, save] = args as [tf.Tensor, tf.Tensor, tf.GradSaveFunc];
    const { out, vals } = sampleForward(img, u, g, interpolation, padding);
    save(vals ? [img, u, vals] : [img, u]);
    return {
      value: out,
      gradFunc: (dy, saved) =>
        sampleBackward(dy as tf.Tensor, saved[0]!, saved[1]!, saved[2], g, interpolation, padding),
    };
  });
  return fn(image, field);
}
