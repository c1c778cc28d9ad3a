import { assertImage, fail, fmtShape, tf } from '@regkit/core';

/** `x` along spatial `axis` (0-based over the spatial axes) from `start`, `size` voxels. */
function sliceAxis(x: tf.Tensor, axis: number, start: number, size: number): tf.Tensor {
  const begin = x.shape.map(() => 0);
  const sizes = [...x.shape];
  begin[axis + 1] = start;
  sizes[axis + 1] = size;
  return tf.slice(x, begin, sizes);
}

/**
 * `x` shifted by `offset` voxels along spatial `axis` with replicate ('edge') borders:
 * out(i) = x(clamp(i + offset, 0, n − 1)). Slices and concatenations only (differentiable,
 * no gather).
 */
function shiftReplicate(x: tf.Tensor, axis: number, offset: number): tf.Tensor {
  if (offset === 0) return x;
  const n = x.shape[axis + 1]!;
  const o = Math.min(Math.abs(offset), n);
  if (offset > 0) {
    const last = sliceAxis(x, axis, n - 1, 1);
    const parts = [sliceAxis(x, axis, o, n - o), ...new Array<tf.Tensor>(o).fill(last)];
    return tf.concat(
      parts.filter((t) => t.shape[axis + 1]! > 0),
      axis + 1,
    );
  }
  const first = sliceAxis(x, axis, 0, 1);
  const parts = [...new Array<tf.Tensor>(o).fill(first), sliceAxis(x, axis, 0, n - o)];
  return tf.concat(
    parts.filter((t) => t.shape[axis + 1]! > 0),
    axis + 1,
  );
}

/** `x` shifted by a whole offset vector (one entry per spatial axis), replicate borders. */
function shiftedBy(x: tf.Tensor, offset: readonly number[]): tf.Tensor {
  let y = x;
  offset.forEach((o, k) => {
    y = shiftReplicate(y, k, o);
  });
  return y;
}

/**
 * The neighbour pairs of the DNS layout, as offset vectors (in voxels, per spatial axis):
 * 3D, the 12 pairs of six-neighbourhood offsets (±e_k) at Euclidean distance √2 from each
 * other (MIND-SSC's self-similarity context); 2D, the 4 pairs of the four-neighbourhood at
 * distance √2. Offsets are multiplied by `dilation` (1: the direct layout 𝒩, 2: the dilated
 * layout 𝒩_d). The order is fixed (lexicographic over neighbour index pairs i < j with
 * neighbours ordered −e_0, +e_0, −e_1, +e_1, …) and shared with the numpy reference.
 */
export function dnsPairs(ndim: 2 | 3, dilation = 1): Array<[number[], number[]]> {
  const neighbours: number[][] = [];
  for (let k = 0; k < ndim; k++) {
    for (const s of [-1, 1]) {
      const v = new Array<number>(ndim).fill(0);
      v[k] = s;
      neighbours.push(v);
    }
  }
  const pairs: Array<[number[], number[]]> = [];
  for (let i = 0; i < neighbours.length; i++) {
    for (let j = i + 1; j < neighbours.length; j++) {
      const d2 = neighbours[i]!.reduce((s, v, k) => s + (v - neighbours[j]![k]!) ** 2, 0);
      if (d2 === 2) {
        pairs.push([
          neighbours[i]!.map((v) => v * dilation),
          neighbours[j]!.map((v) => v * dilation),
        ]);
      }
    }
  }
  return pairs;
}

/** Options of {@link dnsLayer}. */
export interface DnsLayerOptions {
  /**
   * Dilations of the neighbourhood layouts, concatenated in this order (default `[1, 2]`: the
   * direct layout 𝒩 and the dilated layout 𝒩_d of the paper).
   */
  dilations?: readonly number[];
  /** ε added to the noise estimate σ² (default 1e-6): a flat region gives exp(0) = 1, not NaN. */
  epsilon?: number;
}

/**
 * Deep Neighbourhood Self-similarity (DNS, Mok et al. CVPR 2024, Eq. 1) of a feature map h:
 * for every channel c and every neighbour pair (y, y′) of a layout (12 pairs at distance √2
 * in the 3D six-neighbourhood, 4 in the 2D four-neighbourhood, offsets × dilation)
 *
 *   d_r(x, c) = (h_c(x + y_r) − h_c(x + y′_r))²,
 *   σ²(x, c) = mean_r d_r(x, c) + ε          (mean over the pairs of the same layout),
 *   S_r(x, c) = exp(−d_r(x, c) / σ²(x, c)),
 *
 * with replicate borders. Layouts (default direct + dilated ×2) are concatenated.
 * Differentiable.
 *
 * @param h `[B, ...S, C]` features.
 * @returns `[B, ...S, C, R]`, R = (12 in 3D, 4 in 2D) × number of dilations (24 / 8 by default);
 *   relation r of layout l is at index l·pairs + r in {@link dnsPairs} order. (A transpose of
 *   {@link dnsRelations}, which is the fast layout.)
 */
export function dnsLayer(h: tf.Tensor, options: DnsLayerOptions = {}): tf.Tensor {
  return tf.tidy(() => {
    const r = dnsRelations(h, options);
    const perm = [...r.shape.keys()].slice(1); // [B, ...S, C] ← [R, B, ...S, C]
    return tf.transpose(r, [...perm, 0]);
  });
}

/**
 * {@link dnsLayer} with the relations first: `[R, B, ...S, C]` (the layout MASR-Net uses:
 * stacking and averaging along the first axis are contiguous, where a last-axis stack and a
 * rank-5 transpose cost seconds on tfjs' cpu and wasm backends).
 *
 * @param h `[B, ...S, C]` features.
 * @returns `[R, B, ...S, C]`.
 */
export function dnsRelations(h: tf.Tensor, options: DnsLayerOptions = {}): tf.Tensor {
  const fn = 'dnsLayer';
  const nd = assertImage(fn, 'h', h);
  const dilations = options.dilations ?? [1, 2];
  const eps = options.epsilon ?? 1e-6;
  if (dilations.length === 0 || dilations.some((d) => !Number.isInteger(d) || d < 1)) {
    fail(
      fn,
      `'dilations' must be a non-empty list of positive integers, got ${JSON.stringify(dilations)}`,
    );
  }
  if (!(eps >= 0)) fail(fn, `'epsilon' must be ≥ 0, got ${eps}`);
  return tf.tidy(() => {
    const x = h.dtype === 'float32' ? h : tf.cast(h, 'float32');
    const cache = new Map<string, tf.Tensor>();
    const at = (o: number[]) => {
      const key = o.join(',');
      if (!cache.has(key)) cache.set(key, shiftedBy(x, o));
      return cache.get(key)!;
    };
    const layouts = dilations.map((d) => {
      const dist = tf.stack(
        dnsPairs(nd, d).map(([p, q]) => tf.squaredDifference(at(p), at(q))),
        0,
      ); // [R, B, ...S, C]
      const sigma2 = tf.add(tf.mean(dist, 0, true), eps);
      return tf.exp(tf.neg(tf.div(dist, sigma2)));
    });
    return layouts.length === 1 ? layouts[0]! : tf.concat(layouts, 0);
  });
}

/**
 * One separable pass of the [1, 3, 3, 1]/8 binomial filter with stride 2 along spatial
 * `axis`, reflect-padded by 1 before and 2 after (antialiased-cnns' `BlurPool`, filt_size 4):
 * out(i) = (p(2i) + 3 p(2i+1) + 3 p(2i+2) + p(2i+3)) / 8, n → ⌈n/2⌉.
 */
function blurAxis(x: tf.Tensor, axis: number): tf.Tensor {
  const n = x.shape[axis + 1]!;
  const m = Math.ceil(n / 2);
  // whole-sample reflection (torch 'reflect'), period 2(n − 1): valid for any n ≥ 2
  const mirror = (i: number) => {
    const period = 2 * (n - 1);
    const r = ((i % period) + period) % period;
    return r < n ? r : period - r;
  };
  const at = (i: number) => sliceAxis(x, axis, mirror(i), 1);
  const p = tf.concat([at(-1), x, at(n), at(n + 1)], axis + 1); // n + 3
  const pairs = (start: number) => {
    const s = sliceAxis(p, axis, start, 2 * m);
    const shape = [...s.shape];
    shape.splice(axis + 1, 1, m, 2);
    return tf.reshape(s, shape);
  };
  const part = (t: tf.Tensor, k: number) => {
    const begin = t.shape.map(() => 0);
    const size = [...t.shape];
    begin[axis + 2] = k;
    size[axis + 2] = 1;
    return tf.squeeze(tf.slice(t, begin, size), [axis + 2]);
  };
  const a = pairs(0);
  const b = pairs(2);
  return tf.div(tf.addN([part(a, 0), tf.mul(part(a, 1), 3), tf.mul(part(b, 0), 3), part(b, 1)]), 8);
}

/**
 * BlurPool (Zhang, ICML 2019; antialiased-cnns `BlurPool(channels, filt_size=4, stride=2)`):
 * anti-aliased 2× downsampling by the separable binomial filter [1, 3, 3, 1]/8 per axis
 * (outer product, normalised to sum 1) with reflect padding (1 before, 2 after) and stride 2,
 * every channel separately. Each spatial size n ≥ 2 becomes ⌈n/2⌉. Differentiable.
 *
 * @param x `[B, ...S, C]`.
 * @returns `[B, ...⌈S/2⌉, C]`.
 */
export function blurPool(x: tf.Tensor): tf.Tensor {
  const fn = 'blurPool';
  const nd = assertImage(fn, 'x', x);
  if (x.shape.slice(1, 1 + nd).some((n) => n < 2)) {
    fail(fn, `every spatial size must be ≥ 2 (reflect padding), got ${fmtShape(x.shape)}`);
  }
  return tf.tidy(() => {
    let y = x.dtype === 'float32' ? x : tf.cast(x, 'float32');
    for (let k = 0; k < nd; k++) y = blurAxis(y, k);
    return y;
  });
}

/**
 * The [2n, n] matrix of one linear 2× pass, PyTorch `align_corners=False`: row 2i holds
 * ¾ at i and ¼ at i − 1, row 2i + 1 ¾ at i and ¼ at i + 1, indices clamped to [0, n − 1].
 */
function upsampleMatrix(n: number): tf.Tensor2D {
  const m = new Float32Array(2 * n * n);
  const clamp = (i: number) => Math.min(Math.max(i, 0), n - 1);
  for (let i = 0; i < n; i++) {
    m[2 * i * n + i] = (m[2 * i * n + i] ?? 0) + 0.75;
    m[2 * i * n + clamp(i - 1)] = m[2 * i * n + clamp(i - 1)]! + 0.25;
    m[(2 * i + 1) * n + i] = m[(2 * i + 1) * n + i]! + 0.75;
    m[(2 * i + 1) * n + clamp(i + 1)] = m[(2 * i + 1) * n + clamp(i + 1)]! + 0.25;
  }
  return tf.tensor2d(m, [2 * n, n]);
}

/** One linear 2× pass along spatial `axis`: a matrix product over that axis. */
function upsampleAxis(x: tf.Tensor, axis: number): tf.Tensor {
  const n = x.shape[axis + 1]!;
  const outer = x.shape.slice(0, axis + 1).reduce((a, b) => a * b, 1);
  const inner = x.shape.slice(axis + 2).reduce((a, b) => a * b, 1);
  const m = tf.broadcastTo(upsampleMatrix(n), [outer, 2 * n, n]);
  const y = tf.matMul(m, tf.reshape(x, [outer, n, inner]));
  const shape = [...x.shape];
  shape[axis + 1] = 2 * n;
  return tf.reshape(y, shape);
}

/**
 * Linear 2× upsampling (bilinear / trilinear), as PyTorch's
 * `interpolate(scale_factor=2, mode='bilinear'|'trilinear', align_corners=False)`: per axis
 * out(2i) = ¾ x(i) + ¼ x(i − 1), out(2i + 1) = ¾ x(i) + ¼ x(i + 1), indices clamped to the
 * grid. Differentiable.
 *
 * @param x `[B, ...S, C]`.
 * @returns `[B, ...2S, C]`.
 */
export function upsampleLinear2x(x: tf.Tensor): tf.Tensor {
  const nd = assertImage('upsampleLinear2x', 'x', x);
  return tf.tidy(() => {
    let y = x.dtype === 'float32' ? x : tf.cast(x, 'float32');
    for (let k = 0; k < nd; k++) y = upsampleAxis(y, k);
    return y;
  });
}
