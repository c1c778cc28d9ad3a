/**
 * Exact squared Euclidean distance transform with anisotropic voxel spacing
 * (Felzenszwalb & Huttenlocher 2012, separable lower envelopes of parabolas), the
 * quantity `scipy.ndimage.distance_transform_edt(~features, sampling=spacing) ** 2`.
 */

const FAR = 1e30;

/** 1D pass in place on `f` (length n, stride `stride` from `offset`), positions q·s. */
function pass1d(
  f: Float64Array,
  offset: number,
  stride: number,
  n: number,
  s: number,
  buf: { v: Int32Array; z: Float64Array; g: Float64Array },
): void {
  const { v, z, g } = buf;
  for (let q = 0; q < n; q++) g[q] = f[offset + q * stride]!;
  let k = 0;
  v[0] = 0;
  z[0] = -Infinity;
  z[1] = Infinity;
  for (let q = 1; q < n; q++) {
    const xq = q * s;
    let sect = 0;
    for (;;) {
      const p = v[k]!;
      const xp = p * s;
      sect = (g[q]! + xq * xq - (g[p]! + xp * xp)) / (2 * (xq - xp));
      if (sect <= z[k]! && k > 0) k--;
      else break;
    }
    if (sect <= z[k]!) {
      // k === 0 and the new parabola dominates everywhere
      v[0] = q;
      z[0] = -Infinity;
      z[1] = Infinity;
      continue;
    }
    k++;
    v[k] = q;
    z[k] = sect;
    z[k + 1] = Infinity;
  }
  k = 0;
  for (let q = 0; q < n; q++) {
    const x = q * s;
    while (z[k + 1]! < x) k++;
    const p = v[k]!;
    const d = x - p * s;
    f[offset + q * stride] = Math.min(g[p]! + d * d, FAR);
  }
}

/**
 * Squared distance from every voxel to the nearest feature voxel.
 *
 * @param features mask (non-zero = feature) of `shape` (row-major, 1 to 3 axes).
 * @param shape spatial shape.
 * @param spacing voxel size per axis (mm).
 * @returns squared distances (≥ 1e30 where there is no feature at all).
 */
export function squaredDistanceTransform(
  features: Uint8Array,
  shape: readonly number[],
  spacing: readonly number[],
): Float64Array {
  const total = shape.reduce((a, b) => a * b, 1);
  const f = new Float64Array(total);
  for (let i = 0; i < total; i++) f[i] = features[i] ? 0 : FAR;
  const maxN = Math.max(...shape);
  const buf = { v: new Int32Array(maxN), z: new Float64Array(maxN + 1), g: new Float64Array(maxN) };
  for (let axis = 0; axis < shape.length; axis++) {
    const n = shape[axis]!;
    const stride = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
    const outer = total / (n * stride);
    for (let o = 0; o < outer; o++) {
      for (let i = 0; i < stride; i++)
        pass1d(f, o * n * stride + i, stride, n, spacing[axis]!, buf);
    }
  }
  return f;
}
