/*
 * regkit Parzen-window joint histogram and its gradient (@regkit/core's RegkitParzenJoint
 * and RegkitParzenJointGrad contracts; the definition and the tfjs-op version are in
 * packages/losses/src/mutual_information.ts, MONAI's GlobalMutualInformationLoss with a
 * Gaussian kernel). Per batch item, for each of the N samples x of a (and b):
 *   s = clamp((x - lo) / range, 0, 1),  c_k = k / (bins - 1),  sigma = sigmaRatio / (bins - 1),
 *   e_k = exp(-(s - c_k)^2 / (2 sigma^2)),  w_k = e_k / sum_k e_k,
 *   p(a, b)[i, j] = (1/N) sum_x wa_i wb_j,  p(a)[i] = (1/N) sum_x wa_i,  p(b) likewise.
 * Bins farther than 8 sigma + half a bin from the nearest bin centre are left out
 * (their weights are below exp(-32) = 1.3e-14 of the nearest one's: below float32's
 * resolution of every sum they enter). Sums in double precision.
 *
 * Gradient, with G = dL/dp(a, b), g_a = dL/dp(a), g_b = dL/dp(b) given:
 *   dL/dwa_i = (1/N) (sum_j G[i, j] wb_j + g_a[i]),
 *   dw_i/ds = w_i (t_i - sum_k w_k t_k),  t_k = -(s - c_k) / sigma^2,
 *   dL/dx = dL/ds / range where lo <= x <= lo + range (tfjs clipByValue passes the
 *   gradient on the closed interval), else 0; b likewise with G transposed.
 *
 * Layout: a, b, da, db [B, N]; the histogram output and the cotangent are packed per batch
 * item as [bins * bins (p(a, b), row i = bin of a), bins (p(a)), bins (p(b))] float32.
 * Work memory (from JS, 8-byte aligned): parzen_work_bytes(bins, B, N).
 * Freestanding C, linked into warp.wasm (scripts/build-wasm.sh).
 */

#include "fast_exp.h"

typedef __SIZE_TYPE__ size_t;

/** One sample's window of bins: first bin, count, weights and t_k. */
typedef struct {
  int first, count;
  float inside; /* 1 where lo <= x <= lo + range (gradient passes), else 0 */
  float w[64];
  float t[64];
} Window;

typedef struct {
  float lo, range, spacing, inv2s2, invs2;
  int bins, half;
} Params;

static Params params(int bins, float lo, float range, float sigmaRatio) {
  Params p;
  p.bins = bins;
  p.lo = lo;
  p.range = range;
  p.spacing = 1.0f / (float)(bins - 1);
  const float sigma = p.spacing * sigmaRatio;
  p.inv2s2 = 1.0f / (2.0f * sigma * sigma);
  p.invs2 = 1.0f / (sigma * sigma);
  /* 8 sigma plus half a bin, in bins; at most 31 so that a window fits 64 weights */
  int half = (int)(8.0f * sigmaRatio + 0.5f) + 1;
  p.half = half > 31 ? 31 : half;
  return p;
}

/** Window of sample x (with t_k when grad). */
static void window_of(const Params *p, float x, Window *win, int grad) {
  const float u = (x - p->lo) / p->range;
  win->inside = (u >= 0.0f && u <= 1.0f) ? 1.0f : 0.0f;
  const float s = u < 0.0f ? 0.0f : (u > 1.0f ? 1.0f : u);
  const int nearest = (int)(s * (float)(p->bins - 1) + 0.5f);
  int first = nearest - p->half, last = nearest + p->half;
  if (first < 0) first = 0;
  if (last > p->bins - 1) last = p->bins - 1;
  const int count = last - first + 1;
  win->first = first;
  win->count = count;
  float sum = 0.0f;
  for (int k = 0; k < count; k++) {
    const float d = s - (float)(first + k) * p->spacing;
    win->w[k] = d * d * -p->inv2s2;
    if (grad) win->t[k] = -d * p->invs2;
  }
  int k = 0;
  for (; k + 4 <= count; k += 4) wasm_v128_store(win->w + k, fexp4(wasm_v128_load(win->w + k)));
  for (; k < count; k++) win->w[k] = fexp1(win->w[k]);
  for (k = 0; k < count; k++) sum += win->w[k];
  const float inv = 1.0f / sum;
  for (k = 0; k < count; k++) win->w[k] *= inv;
}

/*
 * Threads: the histogram is summed per fixed chunk of PARZEN_CHUNK samples (a split that does
 * not depend on the number of threads) into a double histogram of its own (parzen_chunks,
 * ranges of chunks per thread), then the chunks are added in order (parzen_finish); the
 * gradient is per sample (parzen_joint_grad, ranges of samples per thread).
 */
#define PARZEN_CHUNK 65536

static size_t parzen_chunks_per_item(int N) {
  return ((size_t)N + PARZEN_CHUNK - 1) / PARZEN_CHUNK;
}

/** Bytes of work memory parzen_chunks / parzen_finish need: a double histogram per chunk. */
__attribute__((export_name("parzen_work_bytes"))) size_t parzen_work_bytes(int bins, int B, int N) {
  return ((size_t)bins * bins + 2 * (size_t)bins) * sizeof(double) * (size_t)B *
         parzen_chunks_per_item(N);
}

/** Histograms (unnormalised, double) of the chunks c0 <= c < c1 of [B, chunks per item] into work. */
__attribute__((export_name("parzen_chunks"))) void parzen_chunks(const float *a, const float *b,
                                                                  int B, int N, int bins, float lo,
                                                                  float range, float sigmaRatio,
                                                                  double *work, int c0, int c1) {
  (void)B;
  const Params p = params(bins, lo, range, sigmaRatio);
  const size_t M = (size_t)bins * bins + 2 * (size_t)bins;
  const int per = (int)parzen_chunks_per_item(N);
  Window wa, wb;
  for (int c = c0; c < c1; c++) {
    double *hist = work + (size_t)c * M;
    double *joint = hist, *pa = hist + (size_t)bins * bins, *pb = pa + bins;
    for (size_t k = 0; k < M; k++) hist[k] = 0.0;
    const int bi = c / per, n0 = (c % per) * PARZEN_CHUNK;
    const int n1 = n0 + PARZEN_CHUNK < N ? n0 + PARZEN_CHUNK : N;
    const float *xa = a + (size_t)bi * N, *xb = b + (size_t)bi * N;
    for (int n = n0; n < n1; n++) {
      window_of(&p, xa[n], &wa, 0);
      window_of(&p, xb[n], &wb, 0);
      for (int i = 0; i < wa.count; i++) {
        const double u = wa.w[i];
        double *row = joint + (size_t)(wa.first + i) * bins + wb.first;
        for (int j = 0; j < wb.count; j++) row[j] += u * (double)wb.w[j];
        pa[wa.first + i] += u;
      }
      for (int j = 0; j < wb.count; j++) pb[wb.first + j] += wb.w[j];
    }
  }
}

/** Joint and marginal histograms into out [B, bins^2 + 2 bins]: the chunks of work added in order, / N. */
__attribute__((export_name("parzen_finish"))) void parzen_finish(float *out, int B, int N, int bins,
                                                                  const double *work) {
  const size_t M = (size_t)bins * bins + 2 * (size_t)bins;
  const size_t per = parzen_chunks_per_item(N);
  const double invN = 1.0 / (double)N;
  for (int bi = 0; bi < B; bi++) {
    float *o = out + (size_t)bi * M;
    const double *first = work + (size_t)bi * per * M;
    for (size_t k = 0; k < M; k++) {
      double sum = first[k];
      for (size_t c = 1; c < per; c++) sum += first[c * M + k];
      o[k] = (float)(sum * invN);
    }
  }
}

/** Gradients da, db [B, N] of a loss of the histograms, given its cotangent g [B, bins^2 + 2 bins]. */
__attribute__((export_name("parzen_joint_grad"))) void parzen_joint_grad(
    const float *a, const float *b, const float *g, float *da, float *db, int B, int N, int bins,
    float lo, float range, float sigmaRatio, int n0, int n1) {
  const Params p = params(bins, lo, range, sigmaRatio);
  const size_t M = (size_t)bins * bins + 2 * (size_t)bins;
  const float scale = 1.0f / ((float)N * range);
  Window wa, wb;
  float ga[64], gb[64];
  for (int bi = 0; bi < B; bi++) {
    const float *G = g + (size_t)bi * M, *Ga = G + (size_t)bins * bins, *Gb = Ga + bins;
    const float *xa = a + (size_t)bi * N, *xb = b + (size_t)bi * N;
    float *oa = da + (size_t)bi * N, *ob = db + (size_t)bi * N;
    /* this thread's samples: n0 <= n < n1 of every batch item */
    for (int n = n0; n < n1; n++) {
      window_of(&p, xa[n], &wa, 1);
      window_of(&p, xb[n], &wb, 1);
      for (int j = 0; j < wb.count; j++) gb[j] = Gb[wb.first + j];
      for (int i = 0; i < wa.count; i++) {
        const float *row = G + (size_t)(wa.first + i) * bins + wb.first;
        const float u = wa.w[i];
        float acc = Ga[wa.first + i];
        for (int j = 0; j < wb.count; j++) {
          acc += row[j] * wb.w[j];
          gb[j] += row[j] * u;
        }
        ga[i] = acc;
      }
      float tbar = 0.0f, gw = 0.0f, gwt = 0.0f;
      for (int i = 0; i < wa.count; i++) {
        const float wt = wa.w[i] * wa.t[i];
        tbar += wt;
        gw += ga[i] * wa.w[i];
        gwt += ga[i] * wt;
      }
      oa[n] = (gwt - gw * tbar) * scale * wa.inside;
      tbar = 0.0f, gw = 0.0f, gwt = 0.0f;
      for (int j = 0; j < wb.count; j++) {
        const float wt = wb.w[j] * wb.t[j];
        tbar += wt;
        gw += gb[j] * wb.w[j];
        gwt += gb[j] * wt;
      }
      ob[n] = (gwt - gw * tbar) * scale * wb.inside;
    }
  }
}
