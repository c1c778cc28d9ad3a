/*
 * regkit MIND-SSC descriptor (@regkit/core's RegkitMindSsc contract; the definition and
 * the tfjs-op version are mindSsc in packages/losses/src/features.ts, Heinrich's PyTorch
 * MINDSSC): for output channel c with the offset pair (p_c, q_c) (voxels, dilation
 * applied, in the output channel order, given by JS),
 *   ssd_c(x) = boxmean_{(2r+1)^nd, replicate}( (I(clamp(x + p_c)) - I(clamp(x + q_c)))^2 ),
 *   d_c = ssd_c - min_c' ssd_c',  V = mean_c d_c,  m = mean of V over every voxel and batch
 *   item,  V' = clamp(V, 0.001 m, 1000 m),  out_c = exp(-d_c / V').
 * Replicate borders are index clamping, per axis, so the box mean is separable: three
 * passes (W, H, D) of direct (2r+1)-tap sums of clamped neighbours, divided by the window.
 * Forward only (no gradient). Freestanding C, linked into warp.wasm (scripts/build-wasm.sh).
 *
 * Layout: img [B, D, H, W] (one channel; 2D: D = 1, p_c and q_c with a 0 depth offset),
 * out [B, D, H, W, P] (P pairs, channels last), offsets int32 [P, 6] (p_d, p_h, p_w,
 * q_d, q_h, q_w). Work memory (float32, from JS): mind_work_floats().
 */

#include "fast_exp.h"

typedef __SIZE_TYPE__ size_t;

static inline int clampi(int v, int n) { return v < 0 ? 0 : (v >= n ? n - 1 : v); }

/** Squared difference of img shifted by p and by q (replicate borders) into dst [D, H, W]. */
static void shifted_sqdiff(const float *img, float *dst, int D, int H, int W, const int *pq) {
  const size_t HW = (size_t)H * W;
  for (int z = 0; z < D; z++) {
    const float *sp = img + (size_t)clampi(z + pq[0], D) * HW;
    const float *sq = img + (size_t)clampi(z + pq[3], D) * HW;
    for (int y = 0; y < H; y++) {
      const float *rp = sp + (size_t)clampi(y + pq[1], H) * W;
      const float *rq = sq + (size_t)clampi(y + pq[4], H) * W;
      float *o = dst + (size_t)z * HW + (size_t)y * W;
      const int pw = pq[2], qw = pq[5];
      /* interior: x + pw and x + qw both inside [0, W - 1] */
      int x0 = 0, x1 = W;
      if (-pw > x0) x0 = -pw;
      if (-qw > x0) x0 = -qw;
      if (W - pw < x1) x1 = W - pw;
      if (W - qw < x1) x1 = W - qw;
      if (x1 < x0) x1 = x0;
      for (int x = 0; x < x0 && x < W; x++) {
        const float d = rp[clampi(x + pw, W)] - rq[clampi(x + qw, W)];
        o[x] = d * d;
      }
      const float *ap = rp + pw, *aq = rq + qw;
      for (int x = x0; x < x1; x++) {
        const float d = ap[x] - aq[x];
        o[x] = d * d;
      }
      for (int x = x1 > x0 ? x1 : x0; x < W; x++) {
        const float d = rp[clampi(x + pw, W)] - rq[clampi(x + qw, W)];
        o[x] = d * d;
      }
    }
  }
}

/**
 * Replicate-border box mean along one axis of length n: src and dst are [outer, n, inner];
 * dst[o, i, :] = (1 / (2r + 1)) sum_{k=-r..r} src[o, clamp(i + k), :].
 */
static void box_axis(const float *src, float *dst, size_t outer, int n, size_t inner, int r) {
  const float inv = 1.0f / (float)(2 * r + 1);
  for (size_t o = 0; o < outer; o++) {
    const float *s = src + o * (size_t)n * inner;
    float *d = dst + o * (size_t)n * inner;
    for (int i = 0; i < n; i++) {
      float *row = d + (size_t)i * inner;
      const float *first = s + (size_t)clampi(i - r, n) * inner;
      for (size_t j = 0; j < inner; j++) row[j] = first[j];
      for (int k = -r + 1; k <= r; k++) {
        const float *t = s + (size_t)clampi(i + k, n) * inner;
        for (size_t j = 0; j < inner; j++) row[j] += t[j];
      }
      for (size_t j = 0; j < inner; j++) row[j] *= inv;
    }
  }
}

/** Box mean along W (inner = 1): direct sums with clamped taps, interior without clamps. */
static void box_w(const float *src, float *dst, size_t rows, int W, int r) {
  const float inv = 1.0f / (float)(2 * r + 1);
  for (size_t o = 0; o < rows; o++) {
    const float *s = src + o * (size_t)W;
    float *d = dst + o * (size_t)W;
    for (int i = 0; i < W; i++) {
      if (i >= r && i + r < W) {
        float acc = s[i - r];
        for (int k = -r + 1; k <= r; k++) acc += s[i + k];
        d[i] = acc * inv;
      } else {
        float acc = s[clampi(i - r, W)];
        for (int k = -r + 1; k <= r; k++) acc += s[clampi(i + k, W)];
        d[i] = acc * inv;
      }
    }
  }
}

/*
 * Threads: the P descriptor planes of a batch item are computed by ranges of channels
 * (mind_planes, each thread with its own tmp plane), then the per-voxel min / mean by ranges
 * of voxels (mind_reduce), the mean of V summed per fixed chunk of MIND_CHUNK voxels and the
 * chunks added in order (a split that does not depend on the number of threads), then
 * exp(-d / V') by ranges of voxels (mind_finish).
 */
#define MIND_CHUNK 65536

static size_t mind_chunks(size_t N) { return (N + MIND_CHUNK - 1) / MIND_CHUNK; }

/**
 * Float32 values of work memory for T threads: ssd [P, N], tmp [T, N], var [B, N], then the
 * chunk sums (double, 8-byte aligned) [B, chunks].
 */
__attribute__((export_name("mind_work_floats"))) size_t mind_work_floats(int B, int D, int H,
                                                                          int W, int P, int T) {
  const size_t N = (size_t)D * H * W;
  size_t floats = ((size_t)P + (size_t)T) * N + (size_t)B * N;
  floats += floats & 1;
  return floats + 2 * (size_t)B * mind_chunks(N);
}

/** The box-filtered ssd planes c0 <= c < c1 of batch item b into ssd [P, N]; tmp: [N] of this thread. */
__attribute__((export_name("mind_planes"))) void mind_planes(const float *img, int b, int D, int H,
                                                              int W, int r, const int *offsets,
                                                              float *ssd, float *tmp, int c0,
                                                              int c1) {
  const size_t N = (size_t)D * H * W;
  const float *x = img + (size_t)b * N;
  for (int c = c0; c < c1; c++) {
    float *plane = ssd + (size_t)c * N;
    if (r == 0) {
      shifted_sqdiff(x, plane, D, H, W, offsets + 6 * c);
      continue;
    }
    shifted_sqdiff(x, tmp, D, H, W, offsets + 6 * c);
    box_w(tmp, plane, (size_t)D * H, W, r);
    box_axis(plane, tmp, (size_t)D, H, (size_t)W, r);
    if (D > 1) {
      box_axis(tmp, plane, 1, D, (size_t)H * W, r);
    } else {
      for (size_t j = 0; j < N; j++) plane[j] = tmp[j];
    }
  }
}

/**
 * d_c = ssd_c - min ssd into out and V = mean_c d_c into var for the voxels of chunks
 * k0 <= k < k1 of batch item b; sums[b * chunks + k] = sum of V over chunk k (double).
 */
__attribute__((export_name("mind_reduce"))) void mind_reduce(float *out, int b, int N, int P,
                                                              const float *ssd, float *var,
                                                              double *sums, int k0, int k1) {
  const size_t per = mind_chunks((size_t)N);
  float *o = out + (size_t)b * N * P;
  float *vb = var + (size_t)b * N;
  const float invP = 1.0f / (float)P;
  for (int k = k0; k < k1; k++) {
    const size_t v0 = (size_t)k * MIND_CHUNK;
    const size_t v1 = v0 + MIND_CHUNK < (size_t)N ? v0 + MIND_CHUNK : (size_t)N;
    double total = 0.0;
    for (size_t v = v0; v < v1; v++) {
      float mn = ssd[v];
      for (int c = 1; c < P; c++) {
        const float s = ssd[(size_t)c * N + v];
        mn = s < mn ? s : mn;
      }
      float sum = 0.0f;
      float *ov = o + v * P;
      for (int c = 0; c < P; c++) {
        const float d = ssd[(size_t)c * N + v] - mn;
        ov[c] = d;
        sum += d;
      }
      const float mean = sum * invP;
      vb[v] = mean;
      total += mean;
    }
    sums[(size_t)b * per + k] = total;
  }
}

/** out = exp(-d / clamp(V, 0.001 m, 1000 m)) for the voxels v0 <= v < v1 of [B N]; m from the chunk sums. */
__attribute__((export_name("mind_finish"))) void mind_finish(float *out, int B, int N, int P,
                                                              const float *var, const double *sums,
                                                              int v0, int v1) {
  const size_t chunks = (size_t)B * mind_chunks((size_t)N);
  double total = 0.0;
  for (size_t k = 0; k < chunks; k++) total += sums[k];
  const double m = total / ((double)B * (double)N);
  const float lo = (float)(m * 0.001), hi = (float)(m * 1000.0);
  for (size_t v = (size_t)v0; v < (size_t)v1; v++) {
    float vv = var[v];
    vv = vv < lo ? lo : (vv > hi ? hi : vv);
    float *ov = out + v * P;
    int c = 0;
    const v128_t vq = wasm_f32x4_splat(vv);
    for (; c + 4 <= P; c += 4) {
      const v128_t d = wasm_v128_load(ov + c);
      wasm_v128_store(ov + c, fexp4(wasm_f32x4_neg(wasm_f32x4_div(d, vq))));
    }
    for (; c < P; c++) ov[c] = fexp1(-(ov[c] / vv));
  }
}

/*
 * Gradient (RegkitMindSscGrad): dI from dy = dL/dout [B, D, H, W, P], for the forward above
 * with the global mean m held constant (no gradient through it, as the tfjs-op composite's
 * stopGradient). Per voxel, with V' = clamp(V, lo, hi), out_c = exp(-d_c / V'):
 *   gd_c = -dy_c out_c / V' + [lo <= V <= hi] (sum_c' dy_c' out_c' d_c' / V'^2) / P,
 *   gssd_c = gd_c - [ssd_c == min] sum_c' gd_c'   (tfjs's Min gradient: every tied channel
 *   gets the whole gradient of the min; ssd_c == min  <=>  d_c == 0),
 * then per channel gE_c = boxmean^T(gssd_c) (adjoint of the replicate box mean: each tap's
 * value added back to the clamped voxel it read), gs_c = 2 s_c gE_c with
 * s_c(x) = I(clamp(x + p_c)) - I(clamp(x + q_c)), scattered to contrib_c[clamp(x + p_c)] +=
 * gs_c(x), contrib_c[clamp(x + q_c)] -= gs_c(x); dI = sum_c contrib_c (channels in order).
 * Threads: voxels by ranges (mind_bwd_voxels, mind_bwd_gather), channels by ranges
 * (mind_bwd_planes, each thread with its own two tmp planes); every value is written by one
 * thread in a fixed order, so results do not depend on the number of threads.
 */

/** Adjoint of box_axis: dst[o, j, :] = (1 / (2r + 1)) sum of src[o, i, :] over the taps clamp(i + k) = j. */
static void box_axis_adj(const float *src, float *dst, size_t outer, int n, size_t inner, int r) {
  const float inv = 1.0f / (float)(2 * r + 1);
  for (size_t o = 0; o < outer; o++) {
    const float *s = src + o * (size_t)n * inner;
    float *d = dst + o * (size_t)n * inner;
    for (size_t j = 0; j < (size_t)n * inner; j++) d[j] = 0.0f;
    for (int i = 0; i < n; i++) {
      const float *row = s + (size_t)i * inner;
      for (int k = -r; k <= r; k++) {
        float *t = d + (size_t)clampi(i + k, n) * inner;
        for (size_t j = 0; j < inner; j++) t[j] += row[j];
      }
    }
    for (size_t j = 0; j < (size_t)n * inner; j++) d[j] *= inv;
  }
}

/** Float32 values of work memory of the gradient: d [B, N, P], grad planes [P, N], tmp [2T, N], var [B, N], then the chunk sums (double) [B, chunks]. */
__attribute__((export_name("mind_grad_work_floats"))) size_t mind_grad_work_floats(int B, int D,
                                                                                    int H, int W,
                                                                                    int P, int T) {
  const size_t N = (size_t)D * H * W;
  size_t floats = (size_t)B * N * P + ((size_t)P + 2 * (size_t)T) * N + (size_t)B * N;
  floats += floats & 1;
  return floats + 2 * (size_t)B * mind_chunks(N);
}

/**
 * gssd for the voxels v0 <= v < v1 of [B N]: d [B N, P] (from mind_reduce), var [B N],
 * dy [B N, P]; writes the planes g [P, N] of batch item b (v0, v1 within item b).
 */
__attribute__((export_name("mind_bwd_voxels"))) void mind_bwd_voxels(
    const float *dy, const float *dd, int B, int N, int P, const float *var, const double *sums,
    float *g, int b, int v0, int v1) {
  const size_t chunks = (size_t)B * mind_chunks((size_t)N);
  double total = 0.0;
  for (size_t k = 0; k < chunks; k++) total += sums[k];
  const double m = total / ((double)B * (double)N);
  const float lo = (float)(m * 0.001), hi = (float)(m * 1000.0);
  const float invP = 1.0f / (float)P;
  float gd[64];
  for (size_t u = (size_t)v0; u < (size_t)v1; u++) {
    const size_t v = (size_t)b * N + u;
    const float vraw = var[v];
    const float vv = vraw < lo ? lo : (vraw > hi ? hi : vraw);
    const float *dv = dd + v * P;
    const float *gv = dy + v * P;
    float gvar = 0.0f;
    for (int c = 0; c < P; c++) {
      const float o = fexp1(-(dv[c] / vv));
      const float go = gv[c] * o;
      gd[c] = -(go / vv);
      gvar += go * dv[c];
    }
    gvar = (vraw >= lo && vraw <= hi) ? gvar / (vv * vv) * invP : 0.0f;
    float sum = 0.0f;
    for (int c = 0; c < P; c++) {
      gd[c] += gvar;
      sum += gd[c];
    }
    for (int c = 0; c < P; c++) g[(size_t)c * N + u] = dv[c] == 0.0f ? gd[c] - sum : gd[c];
  }
}

/** Per channel c0 <= c < c1 of batch item b: g plane (gssd) -> contrib plane in place (see above). */
__attribute__((export_name("mind_bwd_planes"))) void mind_bwd_planes(
    const float *img, int b, int D, int H, int W, int r, const int *offsets, float *g, float *tmp,
    float *tmp2, int c0, int c1) {
  const size_t N = (size_t)D * H * W, HW = (size_t)H * W;
  const float *x = img + (size_t)b * N;
  for (int c = c0; c < c1; c++) {
    float *plane = g + (size_t)c * N;
    float *ge = plane;
    if (r > 0) {
      float *a = tmp, *t2 = tmp2;
      if (D > 1) {
        box_axis_adj(plane, a, 1, D, HW, r);
      } else {
        for (size_t j = 0; j < N; j++) a[j] = plane[j];
      }
      box_axis_adj(a, t2, (size_t)D, H, (size_t)W, r);
      box_axis_adj(t2, a, (size_t)D * H, W, 1, r);
      ge = a;
    } else {
      for (size_t j = 0; j < N; j++) tmp[j] = plane[j];
      ge = tmp;
    }
    const int *pq = offsets + 6 * c;
    for (size_t j = 0; j < N; j++) plane[j] = 0.0f;
    for (int z = 0; z < D; z++) {
      const size_t zp = (size_t)clampi(z + pq[0], D) * HW, zq = (size_t)clampi(z + pq[3], D) * HW;
      for (int y = 0; y < H; y++) {
        const size_t rp = zp + (size_t)clampi(y + pq[1], H) * W;
        const size_t rq = zq + (size_t)clampi(y + pq[4], H) * W;
        const float *gr = ge + (size_t)z * HW + (size_t)y * W;
        for (int xx = 0; xx < W; xx++) {
          const size_t ip = rp + (size_t)clampi(xx + pq[2], W);
          const size_t iq = rq + (size_t)clampi(xx + pq[5], W);
          const float s = x[ip] - x[iq];
          const float gs = 2.0f * s * gr[xx];
          plane[ip] += gs;
          plane[iq] -= gs;
        }
      }
    }
  }
}

/** dI[b, v] = sum_c contrib[c, v] (c in order) for the voxels v0 <= v < v1 of batch item b. */
__attribute__((export_name("mind_bwd_gather"))) void mind_bwd_gather(const float *g, float *dimg,
                                                                      int b, int N, int P, int v0,
                                                                      int v1) {
  float *o = dimg + (size_t)b * N;
  for (int v = v0; v < v1; v++) {
    float acc = g[v];
    for (int c = 1; c < P; c++) acc += g[(size_t)c * N + v];
    o[v] = acc;
  }
}
