/**
 * Exact squared Euclidean distance transform with anisotropic voxel spacing
 * (Felzenszwalb & Huttenlocher 2012, separable lower envelopes of parabolas), the
 * quantity `scipy.ndimage.distance_transform_edt(~features, sampling=spacing) ** 2`.
 */

const FAR = 1e30;

/**
 * Lower envelope of the parabolas y = g[p] + (x − p·s)² over one line: out[q] = min_p g[p] +
 * (q·s − p·s)², for a line of `n` values at `g[goff..]`, written to `out[ooff..]`.
 */
function envelope(
  g: Float64Array,
  goff: number,
  out: Float64Array,
  ooff: number,
  n: number,
  s: number,
  v: Int32Array,
  z: Float64Array,
): void {
  let k = 0;
  v[0] = 0;
  z[0] = -Infinity;
  z[1] = Infinity;
  for (let q = 1; q < n; q++) {
    const xq = q * s;
    const gq = g[goff + q]! + xq * xq;
    let sect = 0;
    for (;;) {
      const p = v[k]!;
      const xp = p * s;
      sect = (gq - (g[goff + p]! + xp * xp)) / (2 * (xq - xp));
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
    out[ooff + q] = Math.min(g[goff + p]! + d * d, FAR);
  }
}

/** Lines gathered at once on a strided axis (each gather reads this many contiguous values). */
const BLOCK = 16;

/**
 * Squared distance from every voxel to the nearest feature voxel.
 *
 * The last (contiguous) axis is a two-sweep 1D distance of the binary mask; every other axis
 * takes the lower envelope of parabolas over its lines, `BLOCK` neighbouring lines at a time
 * (gathered into a contiguous buffer), skipping lines with no finite value.
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
  const nd = shape.length;
  // last axis: distance along the line to the nearest feature, both directions
  const nl = shape[nd - 1]!;
  const sl = spacing[nd - 1]!;
  for (let base = 0; base < total; base += nl) {
    let last = -1;
    for (let q = 0; q < nl; q++) {
      if (features[base + q]) last = q;
      const d = (q - last) * sl;
      f[base + q] = last < 0 ? FAR : d * d;
    }
    let next = -1;
    for (let q = nl - 1; q >= 0; q--) {
      if (features[base + q]) next = q;
      else if (next >= 0) {
        const d = (next - q) * sl;
        if (d * d < f[base + q]!) f[base + q] = d * d;
      }
    }
  }
  const maxN = Math.max(...shape);
  const v = new Int32Array(maxN);
  const z = new Float64Array(maxN + 1);
  const g = new Float64Array(BLOCK * maxN);
  const out = new Float64Array(maxN);
  for (let axis = nd - 2; axis >= 0; axis--) {
    const n = shape[axis]!;
    const s = spacing[axis]!;
    const stride = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
    const outer = total / (n * stride);
    for (let o = 0; o < outer; o++) {
      const base = o * n * stride;
      for (let j0 = 0; j0 < stride; j0 += BLOCK) {
        const nb = Math.min(BLOCK, stride - j0);
        for (let q = 0; q < n; q++) {
          const src = base + q * stride + j0;
          for (let b = 0; b < nb; b++) g[b * n + q] = f[src + b]!;
        }
        for (let b = 0; b < nb; b++) {
          let finite = false;
          for (let q = 0; q < n && !finite; q++) finite = g[b * n + q]! < FAR;
          if (!finite) continue;
          envelope(g, b * n, out, 0, n, s, v, z);
          for (let q = 0; q < n; q++) f[base + q * stride + j0 + b] = out[q]!;
        }
      }
    }
  }
  return f;
}
