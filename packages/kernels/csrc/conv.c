/*
 * regkit convolution kernels: 3D convolution forward, input gradient and filter
 * gradient (2D convolution as 3D with a depth of 1), and unsorted segment sum. float32,
 * freestanding C compiled to WebAssembly SIMD (scripts/build-wasm.sh); no libc.
 *
 * Layouts are TensorFlow.js's: x / dx [B, D, H, W, Ci], filter / dfilter
 * [KD, KH, KW, Ci, Co], y / dy [B, Do, Ho, Wo, Co] (channels last). Geometry (output
 * sizes, front/top/left padding) comes from tfjs `computeConv3DInfo`:
 *   forward   y[o] = sum_k x[o * stride - pad + k * dilation] * w[k]
 * and the two gradients are its exact adjoints (zero padding; out-of-range taps dropped).
 *
 * Method: direct convolution (no im2col). The filter is repacked per block of up to 16
 * output lanes ("chunk") so that the vector for one (tap, reduction channel) is contiguous,
 * and a register-blocked micro-kernel accumulates NB output voxels x CV vectors of 4
 * lanes: acc[n][v] += splat(src[n, c]) * w[tap, c, 4v:4v+4] (mul + add; WebAssembly SIMD
 * has no fused multiply-add). Taps are lists of (source offset, weight offset, length);
 * consecutive taps contiguous in both source and weights (the kx run of an interior
 * voxel) are merged into one long reduction. Voxels of an output row with the same tap
 * set and an affine source position form a "run" blocked by NB; border voxels form runs of
 * their own. The input gradient uses the same engine as a gather over dy with the filter
 * transposed and flipped (stride s: voxels of the same residue class share taps); the
 * filter gradient runs the forward geometry with the voxels of a run as the reduction.
 * For stride-1, undilated 3x3x3 filters all three use Winograd F(2x2x2, 3x3x3) instead
 * (27/8 fewer multiplies), and 1x3x3 filters (2D convolutions) F(2x2, 3x3) on each depth
 * slice (9/4 fewer; the input gradient is then a stride-1 convolution of dy with the
 * flipped, transposed filter; the filter gradient is the adjoint of the forward transform),
 * except where few channels make the transforms cost more than they save (see
 * winograd_applies).
 *
 * Tuning (tables GATHER_NB / FILTER_J / WGEMM_NB, overridable with -D for experiments):
 * V8 keeps about 15 vector registers, so 8 accumulators (NB = 2 voxels x 4 vectors)
 * measured fastest for 16-lane chunks; 12 or 16 accumulators spill.
 *
 * Memory and threads: linked into warp.wasm (scripts/build-wasm.sh), on its shared memory
 * (src/loader.ts owns everything above heap_base(): a bump allocator). Every thread runs the
 * same module: a call gets a shared buffer (conv_shared_bytes: packed filter or partial sums)
 * and per-thread scratch (conv_thread_bytes); see "Threaded calls" below for how the work is
 * split so that results are bit-identical at any thread count. Buffers that the kernels read
 * as vectors (dy in the filter gradient) need 16 bytes of readable slack after their end.
 */

#include <wasm_simd128.h>

typedef __SIZE_TYPE__ size_t;
typedef v128_t f4;


#define INLINE static inline __attribute__((always_inline))
#define NOINLINE static __attribute__((noinline))

/* ------------------------------------------------------------------------------------ */
/* Parameters, passed as an int32 array (see conv.ts).                                  */

enum {
  P_B, P_D, P_H, P_W, P_CI, P_KD, P_KH, P_KW, P_CO, P_DO, P_HO, P_WO,
  P_SD, P_SH, P_SW, P_PF, P_PT, P_PL, P_DD, P_DH, P_DW, P_COUNT
};

enum { OP_FWD = 0, OP_BWD_INPUT = 1, OP_BWD_FILTER = 2 };

/** Output lanes per chunk (4 vectors). */
#ifndef CHUNK
#define CHUNK 16
#endif

INLINE int imin(int a, int b) { return a < b ? a : b; }
INLINE size_t align16(size_t n) { return (n + 15) & ~(size_t)15; }

static void zero_f32(float *p, size_t n) {
  size_t i = 0;
  f4 z = wasm_f32x4_splat(0.0f);
  for (; i + 4 <= n; i += 4) wasm_v128_store(p + i, z);
  for (; i < n; i++) p[i] = 0.0f;
}

/* ------------------------------------------------------------------------------------ */
/* Taps along one axis.                                                                  */

/*
 * mode 0 (gather over x, forward and filter gradient): output position p reads
 *   src = p * st - pad + k * dil for k in [0, K), kept when 0 <= src < N; slot = k.
 * mode 1 (gather over dy, input gradient): input position p receives from output o with
 *   o * st - pad + k * dil == p; slot = K - 1 - k (the filter is stored flipped), listed in
 *   increasing slot order so that src increases and stride-1 kx runs merge.
 */
static int taps1d(int mode, int p, int K, int st, int pad, int dil, int N, int *slot,
                  int *src) {
  int n = 0;
  if (mode == 0) {
    for (int k = 0; k < K; k++) {
      int s = p * st - pad + k * dil;
      if (s >= 0 && s < N) {
        slot[n] = k;
        src[n] = s;
        n++;
      }
    }
  } else {
    for (int c = 0; c < K; c++) {
      int k = K - 1 - c;
      int num = p + pad - k * dil;
      if (num < 0 || num % st != 0) continue;
      int o = num / st;
      if (o >= N) continue;
      slot[n] = c;
      src[n] = o;
      n++;
    }
  }
  return n;
}

/* ------------------------------------------------------------------------------------ */
/* Geometry shared by the engines: runs along W, taps of a (row, run).                  */

typedef struct {
  int p0, count, pstep, sstep; /* first target, voxel count, target step, source step */
  int ntap;                    /* taps along W (slots/srcs in the tables at p0) */
} run_t;

typedef struct {
  int s, w, len; /* source offset (floats), weight offset in units of lanes rows, length */
} tap_t;

typedef struct {
  int mode;
  int C;          /* reduction channels (forward/filter: Ci; input gradient: Co) */
  int L;          /* output lanes (forward: Co; input gradient: Ci; filter: Co) */
  int Ds, Hs, Ws; /* source spatial size */
  int Dt, Ht, Wt; /* target spatial size */
  int KD, KH, KW;
  int sd, sh, sw, pf, pt, pl, dd, dh, dw;
  int *wn, *wslot, *wsrc; /* per target x: tap count, slots, sources (KW each) */
  run_t *runs;
  int nruns;
  int *zslot, *zsrc, *yslot, *ysrc;
  tap_t *taps;
} geom_t;

static void *bump(char **p, size_t bytes) {
  void *r = *p;
  *p += align16(bytes);
  return r;
}

static void geom_init(geom_t *g, const int *P, int mode, char **scratch) {
  g->mode = mode;
  g->KD = P[P_KD];
  g->KH = P[P_KH];
  g->KW = P[P_KW];
  g->sd = P[P_SD];
  g->sh = P[P_SH];
  g->sw = P[P_SW];
  g->pf = P[P_PF];
  g->pt = P[P_PT];
  g->pl = P[P_PL];
  g->dd = P[P_DD];
  g->dh = P[P_DH];
  g->dw = P[P_DW];
  if (mode == 0) {
    g->C = P[P_CI];
    g->L = P[P_CO];
    g->Ds = P[P_D], g->Hs = P[P_H], g->Ws = P[P_W];
    g->Dt = P[P_DO], g->Ht = P[P_HO], g->Wt = P[P_WO];
  } else {
    g->C = P[P_CO];
    g->L = P[P_CI];
    g->Ds = P[P_DO], g->Hs = P[P_HO], g->Ws = P[P_WO];
    g->Dt = P[P_D], g->Ht = P[P_H], g->Wt = P[P_W];
  }
  const int Wt = g->Wt, KW = g->KW;
  g->wn = bump(scratch, sizeof(int) * (size_t)Wt);
  g->wslot = bump(scratch, sizeof(int) * (size_t)Wt * KW);
  g->wsrc = bump(scratch, sizeof(int) * (size_t)Wt * KW);
  g->runs = bump(scratch, sizeof(run_t) * (size_t)Wt);
  g->zslot = bump(scratch, sizeof(int) * (size_t)g->KD);
  g->zsrc = bump(scratch, sizeof(int) * (size_t)g->KD);
  g->yslot = bump(scratch, sizeof(int) * (size_t)g->KH);
  g->ysrc = bump(scratch, sizeof(int) * (size_t)g->KH);
  g->taps = bump(scratch, sizeof(tap_t) * (size_t)g->KD * g->KH * KW);

  for (int p = 0; p < Wt; p++)
    g->wn[p] = taps1d(mode, p, KW, g->sw, g->pl, g->dw, g->Ws, g->wslot + p * KW,
                      g->wsrc + p * KW);

  /* Runs: per residue class (input gradient: positions p = r mod stride share taps),
     maximal sequences with equal slots and sources advancing by a constant step. */
  const int q = mode == 0 ? 1 : g->sw;
  int nr = 0;
  for (int r = 0; r < q; r++) {
    int p = r;
    while (p < Wt) {
      run_t *R = &g->runs[nr++];
      R->p0 = p;
      R->pstep = q;
      R->ntap = g->wn[p];
      R->count = 1;
      R->sstep = 0;
      const int *s0 = g->wslot + p * KW, *r0 = g->wsrc + p * KW;
      for (;;) {
        int p1 = p + q * R->count;
        if (p1 >= Wt || g->wn[p1] != R->ntap) break;
        const int *s1 = g->wslot + p1 * KW, *r1 = g->wsrc + p1 * KW;
        int ok = 1;
        int step = R->count == 1 ? (R->ntap ? r1[0] - r0[0] : 0) : R->sstep;
        for (int i = 0; i < R->ntap && ok; i++)
          ok = s1[i] == s0[i] && r1[i] - r0[i] == step * R->count;
        if (!ok) break;
        R->sstep = step;
        R->count++;
      }
      p += q * R->count;
    }
  }
  g->nruns = nr;
}

/* Taps of target row (pz, py) restricted to run R; returns their number (merged). */
static int row_taps(geom_t *g, int nz, int ny, const run_t *R) {
  const int KW = g->KW, C = g->C;
  const int *xs = g->wslot + R->p0 * KW, *xr = g->wsrc + R->p0 * KW;
  int n = 0;
  for (int a = 0; a < nz; a++) {
    for (int b = 0; b < ny; b++) {
      const int rowsrc = (g->zsrc[a] * g->Hs + g->ysrc[b]) * g->Ws;
      const int rowslot = (g->zslot[a] * g->KH + g->yslot[b]) * KW;
      for (int i = 0; i < R->ntap; i++) {
        int s = (rowsrc + xr[i]) * C;
        int w = (rowslot + xs[i]) * C;
        if (n > 0 && g->taps[n - 1].s + g->taps[n - 1].len == s &&
            g->taps[n - 1].w + g->taps[n - 1].len == w) {
          g->taps[n - 1].len += C;
        } else {
          g->taps[n].s = s;
          g->taps[n].w = w;
          g->taps[n].len = C;
          n++;
        }
      }
    }
  }
  return n;
}

/* ------------------------------------------------------------------------------------ */
/* Micro-kernels.                                                                        */

/*
 * Gather micro-kernel: NB voxels x CV vectors. src: source base of voxel 0, nstep: floats
 * between voxels; wc: packed weights of the chunk (CW = 4 * CV lanes per row); out: output of
 * voxel 0 (chunk offset applied), ostep: floats between output voxels; nvalid: valid lanes
 * of the chunk (< CW only in the last chunk when L is not a multiple of 4).
 */
#define DEFINE_GATHER(NB, CV)                                                            \
  NOINLINE void gather_##NB##_##CV(const float *src, int nstep, const tap_t *taps,       \
                                   int ntaps, const float *wc, float *out, int ostep,    \
                                   int nvalid, int accumulate) {                         \
    f4 acc[NB][CV];                                                                      \
    for (int n = 0; n < NB; n++)                                                         \
      for (int v = 0; v < CV; v++) acc[n][v] = wasm_f32x4_splat(0.0f);                   \
    if (accumulate) {                                                                    \
      for (int n = 0; n < NB; n++) {                                                     \
        float tmp[4 * CV] __attribute__((aligned(16))) = {0};                            \
        const float *o = out + n * ostep;                                                \
        if (nvalid < 4 * CV) {                                                           \
          for (int l = 0; l < nvalid; l++) tmp[l] = o[l];                                \
          o = tmp;                                                                       \
        }                                                                                \
        for (int v = 0; v < CV; v++) acc[n][v] = wasm_v128_load(o + 4 * v);              \
      }                                                                                  \
    }                                                                                    \
    for (int t = 0; t < ntaps; t++) {                                                    \
      const float *s = src + taps[t].s;                                                  \
      const float *w = wc + taps[t].w * (4 * CV);                                        \
      const int len = taps[t].len;                                                       \
      for (int j = 0; j < len; j++) {                                                    \
        f4 wv[CV];                                                                       \
        for (int v = 0; v < CV; v++) wv[v] = wasm_v128_load(w + j * (4 * CV) + 4 * v);    \
        for (int n = 0; n < NB; n++) {                                                   \
          f4 b = wasm_v128_load32_splat(s + n * nstep + j);                              \
          for (int v = 0; v < CV; v++)                                                   \
            acc[n][v] = wasm_f32x4_add(acc[n][v], wasm_f32x4_mul(b, wv[v]));             \
        }                                                                                \
      }                                                                                  \
    }                                                                                    \
    if (nvalid == 4 * CV) {                                                              \
      for (int n = 0; n < NB; n++)                                                       \
        for (int v = 0; v < CV; v++) wasm_v128_store(out + n * ostep + 4 * v, acc[n][v]); \
    } else {                                                                             \
      for (int n = 0; n < NB; n++) {                                                     \
        float tmp[4 * CV] __attribute__((aligned(16)));                                  \
        for (int v = 0; v < CV; v++) wasm_v128_store(tmp + 4 * v, acc[n][v]);            \
        for (int l = 0; l < nvalid; l++) out[n * ostep + l] = tmp[l];                    \
      }                                                                                  \
    }                                                                                    \
  }

/*
 * Filter-gradient micro-kernel: J reduction rows x CV vectors, summed over `count` voxels:
 * dw[j, :] += sum_m x[m * xstep + j] * dy[m * dystep, :]. dy is read as whole vectors.
 */
#define DEFINE_FILTER(J, CV)                                                             \
  NOINLINE void filter_##J##_##CV(const float *x, int xstep, const float *dy, int dystep, \
                                  int count, float *dw) {                                \
    f4 acc[J][CV];                                                                       \
    for (int j = 0; j < J; j++)                                                          \
      for (int v = 0; v < CV; v++) acc[j][v] = wasm_f32x4_splat(0.0f);                    \
    for (int m = 0; m < count; m++) {                                                    \
      f4 d[CV];                                                                          \
      for (int v = 0; v < CV; v++) d[v] = wasm_v128_load(dy + m * dystep + 4 * v);        \
      for (int j = 0; j < J; j++) {                                                      \
        f4 b = wasm_v128_load32_splat(x + m * xstep + j);                                \
        for (int v = 0; v < CV; v++)                                                     \
          acc[j][v] = wasm_f32x4_add(acc[j][v], wasm_f32x4_mul(b, d[v]));                \
      }                                                                                  \
    }                                                                                    \
    for (int j = 0; j < J; j++)                                                          \
      for (int v = 0; v < CV; v++) {                                                     \
        float *p = dw + j * (4 * CV) + 4 * v;                                            \
        wasm_v128_store(p, wasm_f32x4_add(wasm_v128_load(p), acc[j][v]));                \
      }                                                                                  \
  }

#ifndef GATHER_NB4
#define GATHER_NB4 2
#endif
#ifndef GATHER_NB3
#define GATHER_NB3 3
#endif
#ifndef GATHER_NB2
#define GATHER_NB2 4
#endif
#ifndef GATHER_NB1
#define GATHER_NB1 8
#endif
#ifndef FILTER_J4
#define FILTER_J4 2
#endif
#ifndef FILTER_J3
#define FILTER_J3 3
#endif
#ifndef FILTER_J2
#define FILTER_J2 4
#endif
#ifndef FILTER_J1
#define FILTER_J1 8
#endif

#define NBMAX 8

/* Bytes of packed weights one sweep of the gather micro-kernel over a run may use. */
#ifndef TAP_BUDGET
#define TAP_BUDGET 16384
#endif

DEFINE_GATHER(1, 1)
DEFINE_GATHER(2, 1)
DEFINE_GATHER(3, 1)
DEFINE_GATHER(4, 1)
DEFINE_GATHER(5, 1)
DEFINE_GATHER(6, 1)
DEFINE_GATHER(7, 1)
DEFINE_GATHER(8, 1)
DEFINE_GATHER(1, 2)
DEFINE_GATHER(2, 2)
DEFINE_GATHER(3, 2)
DEFINE_GATHER(4, 2)
DEFINE_GATHER(5, 2)
DEFINE_GATHER(6, 2)
DEFINE_GATHER(7, 2)
DEFINE_GATHER(8, 2)
DEFINE_GATHER(1, 3)
DEFINE_GATHER(2, 3)
DEFINE_GATHER(3, 3)
DEFINE_GATHER(4, 3)
DEFINE_GATHER(5, 3)
DEFINE_GATHER(6, 3)
DEFINE_GATHER(7, 3)
DEFINE_GATHER(8, 3)
DEFINE_GATHER(1, 4)
DEFINE_GATHER(2, 4)
DEFINE_GATHER(3, 4)
DEFINE_GATHER(4, 4)
DEFINE_GATHER(5, 4)
DEFINE_GATHER(6, 4)
DEFINE_GATHER(7, 4)
DEFINE_GATHER(8, 4)

DEFINE_FILTER(1, 1)
DEFINE_FILTER(2, 1)
DEFINE_FILTER(3, 1)
DEFINE_FILTER(4, 1)
DEFINE_FILTER(5, 1)
DEFINE_FILTER(6, 1)
DEFINE_FILTER(7, 1)
DEFINE_FILTER(8, 1)
DEFINE_FILTER(1, 2)
DEFINE_FILTER(2, 2)
DEFINE_FILTER(3, 2)
DEFINE_FILTER(4, 2)
DEFINE_FILTER(5, 2)
DEFINE_FILTER(6, 2)
DEFINE_FILTER(7, 2)
DEFINE_FILTER(8, 2)
DEFINE_FILTER(1, 3)
DEFINE_FILTER(2, 3)
DEFINE_FILTER(3, 3)
DEFINE_FILTER(4, 3)
DEFINE_FILTER(5, 3)
DEFINE_FILTER(6, 3)
DEFINE_FILTER(7, 3)
DEFINE_FILTER(8, 3)
DEFINE_FILTER(1, 4)
DEFINE_FILTER(2, 4)
DEFINE_FILTER(3, 4)
DEFINE_FILTER(4, 4)
DEFINE_FILTER(5, 4)
DEFINE_FILTER(6, 4)
DEFINE_FILTER(7, 4)
DEFINE_FILTER(8, 4)

typedef void (*gather_fn)(const float *, int, const tap_t *, int, const float *, float *, int,
                          int, int);
typedef void (*filter_fn)(const float *, int, const float *, int, int, float *);

/* [CV - 1][NB - 1] */
static const gather_fn GATHER[4][NBMAX] = {
    {gather_1_1, gather_2_1, gather_3_1, gather_4_1, gather_5_1, gather_6_1, gather_7_1, gather_8_1},
    {gather_1_2, gather_2_2, gather_3_2, gather_4_2, gather_5_2, gather_6_2, gather_7_2, gather_8_2},
    {gather_1_3, gather_2_3, gather_3_3, gather_4_3, gather_5_3, gather_6_3, gather_7_3, gather_8_3},
    {gather_1_4, gather_2_4, gather_3_4, gather_4_4, gather_5_4, gather_6_4, gather_7_4, gather_8_4},
};
static const int GATHER_NB[4] = {GATHER_NB1, GATHER_NB2, GATHER_NB3, GATHER_NB4};

static const filter_fn FILTER[4][NBMAX] = {
    {filter_1_1, filter_2_1, filter_3_1, filter_4_1, filter_5_1, filter_6_1, filter_7_1, filter_8_1},
    {filter_1_2, filter_2_2, filter_3_2, filter_4_2, filter_5_2, filter_6_2, filter_7_2, filter_8_2},
    {filter_1_3, filter_2_3, filter_3_3, filter_4_3, filter_5_3, filter_6_3, filter_7_3, filter_8_3},
    {filter_1_4, filter_2_4, filter_3_4, filter_4_4, filter_5_4, filter_6_4, filter_7_4, filter_8_4},
};
static const int FILTER_J[4] = {FILTER_J1, FILTER_J2, FILTER_J3, FILTER_J4};

/* ------------------------------------------------------------------------------------ */
/* Filter packing.                                                                       */

/*
 * Packed layout: chunk after chunk (chunk c covers lanes [16c, 16c + CW), CW = 16 or the
 * rest rounded up to 4); within a chunk [slot (K3)][reduction channel (C)][CW], zero in the
 * padding lanes. Chunk c starts at K3 * C * 16c floats.
 */
INLINE int chunk_width(int L, int off) {
  int rest = L - off;
  return rest >= CHUNK ? CHUNK : (rest + 3) & ~3;
}

/* Forward: reduction Ci, lanes Co, slot = filter index. */
static void pack_forward(const float *w, float *wp, int K3, int Ci, int Co) {
  for (int off = 0; off < Co; off += CHUNK) {
    const int CW = chunk_width(Co, off);
    float *pc = wp + (size_t)K3 * Ci * off;
    for (int t = 0; t < K3; t++)
      for (int c = 0; c < Ci; c++) {
        const float *src = w + ((size_t)t * Ci + c) * Co + off;
        float *dst = pc + ((size_t)t * Ci + c) * CW;
        for (int l = 0; l < CW; l++) dst[l] = off + l < Co ? src[l] : 0.0f;
      }
  }
}

/* Input gradient: reduction Co, lanes Ci, slot (a, b, c) = filter (KD-1-a, KH-1-b, KW-1-c). */
static void pack_input_grad(const float *w, float *wp, int KD, int KH, int KW, int Ci, int Co) {
  const int K3 = KD * KH * KW;
  for (int off = 0; off < Ci; off += CHUNK) {
    const int CW = chunk_width(Ci, off);
    float *pc = wp + (size_t)K3 * Co * off;
    for (int a = 0; a < KD; a++)
      for (int b = 0; b < KH; b++)
        for (int c = 0; c < KW; c++) {
          const int slot = (a * KH + b) * KW + c;
          const int k = ((KD - 1 - a) * KH + (KH - 1 - b)) * KW + (KW - 1 - c);
          for (int o = 0; o < Co; o++) {
            float *dst = pc + ((size_t)slot * Co + o) * CW;
            for (int l = 0; l < CW; l++)
              dst[l] = off + l < Ci ? w[((size_t)k * Ci + off + l) * Co + o] : 0.0f;
          }
        }
  }
}

/* ------------------------------------------------------------------------------------ */
/* Gather engine (forward and input gradient).                                          */

/* Target rows u in [u0, u1) (u = (b * Dt + pz) * Ht + py): each writes its own output row only. */
static void gather_conv(geom_t *g, const float *src, const float *wp, float *out, long u0,
                        long u1) {
  const int C = g->C, L = g->L;
  const int K3 = g->KD * g->KH * g->KW;
  const size_t src_batch = (size_t)g->Ds * g->Hs * g->Ws * C;
  for (long u = u0; u < u1; u++) {
    const int py = (int)(u % g->Ht), pz = (int)(u / g->Ht % g->Dt);
    const int b = (int)(u / g->Ht / g->Dt);
    const float *sb = src + b * src_batch;
    {
      const int nz =
          taps1d(g->mode, pz, g->KD, g->sd, g->pf, g->dd, g->Ds, g->zslot, g->zsrc);
      {
        const int ny =
            taps1d(g->mode, py, g->KH, g->sh, g->pt, g->dh, g->Hs, g->yslot, g->ysrc);
        float *orow = out + (((size_t)b * g->Dt + pz) * g->Ht + py) * g->Wt * L;
        for (int r = 0; r < g->nruns; r++) {
          const run_t *R = &g->runs[r];
          const int ntaps = row_taps(g, nz, ny, R);
          const int nstep = R->sstep * C;
          const int ostep = R->pstep * L;
          for (int off = 0; off < L; off += CHUNK) {
            const int CW = chunk_width(L, off);
            const int CV = CW / 4;
            const int nvalid = imin(CW, L - off);
            const float *wc = wp + (size_t)K3 * C * off;
            const int NB = GATHER_NB[CV - 1];
            float *o = orow + (size_t)R->p0 * L + off;
            /* groups of taps whose weights stay in the L1 cache while the run is swept;
               later groups add to the partial sums of earlier ones */
            int g0 = 0;
            do {
              int g1 = g0 + 1;
              size_t bytes = ntaps ? (size_t)g->taps[g0].len * CW * 4 : 0;
              while (g1 < ntaps && bytes + (size_t)g->taps[g1].len * CW * 4 <= TAP_BUDGET)
                bytes += (size_t)g->taps[g1++].len * CW * 4;
              if (g1 > ntaps) g1 = ntaps;
              const tap_t *tg = g->taps + g0;
              const int ng = g1 - g0, accumulate = g0 > 0;
              int n = 0;
              for (; n + NB <= R->count; n += NB)
                GATHER[CV - 1][NB - 1](sb + n * nstep, nstep, tg, ng, wc, o + (size_t)n * ostep,
                                       ostep, nvalid, accumulate);
              if (n < R->count)
                GATHER[CV - 1][R->count - n - 1](sb + n * nstep, nstep, tg, ng, wc,
                                                 o + (size_t)n * ostep, ostep, nvalid,
                                                 accumulate);
              g0 = g1;
            } while (g0 < ntaps);
          }
        }
      }
    }
  }
}

/* ------------------------------------------------------------------------------------ */
/* Winograd F(2x2x2, 3x3x3) (and F(2x2, 3x3) for 1x3x3) for stride 1, dilation 1.          */

/*
 * 1D: y = A^T [(G g) . (B^T d)] for 4 inputs d, 3 taps g, 2 outputs (correlation), applied
 * along each axis: the product stage is, for each of the 64 transform points, a matrix
 * product [tiles x C] x [C x L] run by the gather micro-kernel (27/8 fewer multiplies than
 * the direct method). Tiles of 2x2x2 outputs are processed in batches whose transformed
 * inputs and products fit in the L2 cache.
 *   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
 *   G   = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
 *   A^T = [1 1 1 0; 0 1 -1 -1]
 */
static const float WG[4][3] = {{1.0f, 0.0f, 0.0f},
                               {0.5f, 0.5f, 0.5f},
                               {0.5f, -0.5f, 0.5f},
                               {0.0f, 0.0f, 1.0f}};

/*
 * Stride 1, 3x3x3 or 1x3x3 (a 2D convolution: F(2x2, 3x3) on every depth slice, 16
 * transform points instead of 64), dilation 1, and worth it: the transforms cost about as
 * much as the products, so with few reduction channels (C < 4) or output lanes (L <= 4) the
 * direct method is faster (measured on 48^3 volumes).
 */
static int winograd_applies(const int *P, int op) {
#ifdef NO_WINOGRAD /* for measurements: direct method only */
  return 0;
#endif
  const int C = op != OP_BWD_INPUT ? P[P_CI] : P[P_CO];
  const int L = op != OP_BWD_INPUT ? P[P_CO] : P[P_CI];
  return C >= (op == OP_BWD_FILTER ? 8 : 4) && L > 4 &&
         (P[P_KD] == 3 ? P[P_DD] == 1 : P[P_KD] == 1) && P[P_KH] == 3 && P[P_KW] == 3 &&
         P[P_SD] == 1 && P[P_SH] == 1 && P[P_SW] == 1 && P[P_DH] == 1 && P[P_DW] == 1;
}

#ifndef WINO_BUDGET
#define WINO_BUDGET 2048
#endif
/* Tiles per batch: 64 * T * (C4 + L4) floats of about 512 KiB, a multiple of 12. */
INLINE int winograd_batch(int C4, int L4) {
  int T = WINO_BUDGET / (C4 + L4);
  T = T / 12 * 12;
  return T < 12 ? 12 : T;
}

/*
 * Transformed filter U, chunk after chunk: [NP points][C][CW] (zero padding lanes); w [KD,
 * 3, 3, C, L] with KD = 3 (NP = 64) or KD = 1 (NP = 16, no transform along z).
 */
static void winograd_filter(const float *w, float *U, int C, int L, int KD, int transpose) {
  const int NP = KD == 3 ? 64 : 16;
  for (int off = 0; off < L; off += CHUNK) {
    const int CW = chunk_width(L, off);
    float *Uc = U + (size_t)NP * C * off;
    for (int xi = 0; xi < NP; xi++) {
      const int a = KD == 3 ? xi >> 4 : 0, b = (xi >> 2) & 3, c = xi & 3;
      for (int r = 0; r < C; r++) {
        float *dst = Uc + ((size_t)xi * C + r) * CW;
        for (int l = 0; l < CW; l++) {
          float s = 0.0f;
          if (off + l < L) {
            for (int i = 0; i < KD; i++)
              for (int j = 0; j < 3; j++)
                for (int k = 0; k < 3; k++) {
                  const float gg = (KD == 3 ? WG[a][i] : 1.0f) * WG[b][j] * WG[c][k];
                  if (gg == 0.0f) continue;
                  const float wv =
                      transpose
                          ? w[((size_t)(((KD - 1 - i) * 3 + (2 - j)) * 3 + (2 - k)) * L + off +
                               l) *
                                  C +
                              r]
                          : w[((size_t)((i * 3 + j) * 3 + k) * C + r) * L + off + l];
                  s += gg * wv;
                }
          }
          dst[l] = s;
        }
      }
    }
  }
}

/*
 * Winograd product stage for one transform point: M[t, :CW] = V[t, :C] x Uc[:C, :CW] for
 * t < nt (V rows C4 apart, M rows L4 apart), blocked by NB tiles.
 */
INLINE void wgemm_block(const int NB, const int CV, const float *V, int C4, int C,
                        const float *U, float *M, int L4) {
  f4 acc[NBMAX][4];
  for (int n = 0; n < NB; n++)
    for (int v = 0; v < CV; v++) acc[n][v] = wasm_f32x4_splat(0.0f);
  for (int c = 0; c < C; c++) {
    f4 wv[4];
    for (int v = 0; v < CV; v++) wv[v] = wasm_v128_load(U + c * (4 * CV) + 4 * v);
    for (int n = 0; n < NB; n++) {
      f4 b = wasm_v128_load32_splat(V + n * C4 + c);
      for (int v = 0; v < CV; v++)
        acc[n][v] = wasm_f32x4_add(acc[n][v], wasm_f32x4_mul(b, wv[v]));
    }
  }
  for (int n = 0; n < NB; n++)
    for (int v = 0; v < CV; v++) wasm_v128_store(M + n * L4 + 4 * v, acc[n][v]);
}

#define DEFINE_WGEMM_LOOP(CV, NB)                                                        \
  NOINLINE void wgemm_##CV(const float *V, int C4, int C, const float *U, float *M,     \
                           int L4, int nt) {                                             \
    int t = 0;                                                                           \
    for (; t + NB <= nt; t += NB) wgemm_block(NB, CV, V + t * C4, C4, C, U, M + t * L4, L4); \
    for (; t < nt; t++) wgemm_block(1, CV, V + t * C4, C4, C, U, M + t * L4, L4);         \
  }

#ifndef WGEMM_NB1
#define WGEMM_NB1 GATHER_NB1
#endif
#ifndef WGEMM_NB2
#define WGEMM_NB2 GATHER_NB2
#endif
#ifndef WGEMM_NB3
#define WGEMM_NB3 GATHER_NB3
#endif
#ifndef WGEMM_NB4
#define WGEMM_NB4 2
#endif
DEFINE_WGEMM_LOOP(1, WGEMM_NB1)
DEFINE_WGEMM_LOOP(2, WGEMM_NB2)
DEFINE_WGEMM_LOOP(3, WGEMM_NB3)
DEFINE_WGEMM_LOOP(4, WGEMM_NB4)

typedef void (*wgemm_fn)(const float *, int, int, const float *, float *, int, int);
static const wgemm_fn WGEMM[4] = {wgemm_1, wgemm_2, wgemm_3, wgemm_4};

/*
 * Geometry of a Winograd call: source (C channels) and target (L channels) volumes; KD the
 * filter depth (3: tiles of 2x2x2 outputs, NP = 64 transform points; 1: tiles of 1x2x2
 * outputs, NP = 16, the 2D transform on each depth slice).
 */
typedef struct {
  int B, Ds, Hs, Ws, C, C4, L, L4, Dt, Ht, Wt, pf, pt, pl, T, nTz, nTy, nTx, KD, NP;
} wgeom_t;

INLINE void tile_of(const wgeom_t *g, long id, int *b, int *tz, int *ty, int *tx) {
  *tx = id % g->nTx;
  id /= g->nTx;
  *ty = id % g->nTy;
  id /= g->nTy;
  *tz = id % g->nTz;
  *b = (int)(id / g->nTz);
}

/* Input transform of tiles [t0, t0 + nt): V[xi][t][C4] = (B^T d B)[xi] (zero outside). */
INLINE void winograd_input_nz(const wgeom_t *g, const float *src, long t0, int nt, float *V,
                              float *tb, float *raw, const int NZ) {
  const int Ds = g->Ds, Hs = g->Hs, Ws = g->Ws, C = g->C, C4 = g->C4, T = g->T;
  const int pf = g->pf, pt = g->pt, pl = g->pl;
  /* NZ: source block depth (transform points along z), a constant of each instance */
  const int ZD = NZ == 4 ? 2 : 1; /* tile depth */
  for (int t = 0; t < nt; t++) {
    int b, tz, ty, tx;
    tile_of(g, t0 + t, &b, &tz, &ty, &tx);
    const int z0 = ZD * tz - pf, y0 = 2 * ty - pt, x0 = 2 * tx - pl;
    const float *sb = src + (size_t)b * Ds * Hs * Ws * C;
    const int inside = z0 >= 0 && y0 >= 0 && x0 >= 0 && z0 + NZ <= Ds && y0 + 4 <= Hs &&
                       x0 + 4 <= Ws && C == C4;
    /* the 4x4x4 block: straight from the source, or gathered with zeros into raw */
    const float *blk;
    size_t zs, ys, xs;
    if (inside) {
      blk = sb + (((size_t)z0 * Hs + y0) * Ws + x0) * C;
      zs = (size_t)Hs * Ws * C, ys = (size_t)Ws * C, xs = C;
    } else {
      for (int i = 0; i < NZ; i++)
        for (int j = 0; j < 4; j++)
          for (int k = 0; k < 4; k++) {
            const int z = z0 + i, y = y0 + j, x = x0 + k;
            float *dk = raw + (size_t)((i * 4 + j) * 4 + k) * C4;
            if (z < 0 || z >= Ds || y < 0 || y >= Hs || x < 0 || x >= Ws) {
              for (int c = 0; c < C4; c++) dk[c] = 0.0f;
            } else {
              const float *sp = sb + (((size_t)z * Hs + y) * Ws + x) * C;
              int c = 0;
              for (; c < C; c++) dk[c] = sp[c];
              for (; c < C4; c++) dk[c] = 0.0f;
            }
          }
      blk = raw;
      zs = (size_t)16 * C4, ys = (size_t)4 * C4, xs = C4;
    }
    for (int v = 0; v < C4; v += 4) {
      /* along x then y, slice by slice, rows kept in registers; into tb[i][j][k] (3D) or
         straight into V[jk][t] (2D: no transform along z) */
      for (int i = 0; i < NZ; i++) {
        f4 r0[4], r1[4];
        float *d = NZ == 4 ? tb + (size_t)i * 16 * C4 + v : V + (size_t)t * C4 + v;
        const size_t ps = NZ == 4 ? (size_t)C4 : (size_t)T * C4; /* point stride */
        for (int j = 0; j < 4; j++) {
          const float *q = blk + i * zs + j * ys + v;
          const f4 a0 = wasm_v128_load(q), a1 = wasm_v128_load(q + xs);
          const f4 a2 = wasm_v128_load(q + 2 * xs), a3 = wasm_v128_load(q + 3 * xs);
          f4 r[4];
          r[0] = wasm_f32x4_sub(a0, a2);
          r[1] = wasm_f32x4_add(a1, a2);
          r[2] = wasm_f32x4_sub(a2, a1);
          r[3] = wasm_f32x4_sub(a1, a3);
          for (int k = 0; k < 4; k++) {
            if (j == 0) {
              r0[k] = r[k];
            } else if (j == 1) {
              r1[k] = r[k];
            } else if (j == 2) {
              wasm_v128_store(d + k * ps, wasm_f32x4_sub(r0[k], r[k]));
              wasm_v128_store(d + (4 + k) * ps, wasm_f32x4_add(r1[k], r[k]));
              wasm_v128_store(d + (8 + k) * ps, wasm_f32x4_sub(r[k], r1[k]));
            } else {
              wasm_v128_store(d + (12 + k) * ps, wasm_f32x4_sub(r1[k], r[k]));
            }
          }
        }
      }
      if (NZ == 1) continue;
      for (int jk = 0; jk < 16; jk++) { /* along z, to V */
        const float *q = tb + (size_t)jk * C4 + v;
        const int st = 16 * C4;
        const f4 d0 = wasm_v128_load(q), d1 = wasm_v128_load(q + st);
        const f4 d2 = wasm_v128_load(q + 2 * st), d3 = wasm_v128_load(q + 3 * st);
        float *o = V + ((size_t)jk * T + t) * C4 + v;
        const size_t vs = (size_t)16 * T * C4;
        wasm_v128_store(o, wasm_f32x4_sub(d0, d2));
        wasm_v128_store(o + vs, wasm_f32x4_add(d1, d2));
        wasm_v128_store(o + 2 * vs, wasm_f32x4_sub(d2, d1));
        wasm_v128_store(o + 3 * vs, wasm_f32x4_sub(d1, d3));
      }
    }
  }
}

/* The two instances (loops over z fully unrolled in each), chosen by the filter depth. */
NOINLINE void winograd_input_3d(const wgeom_t *g, const float *src, long t0, int nt, float *V,
                                float *tb, float *raw) {
  winograd_input_nz(g, src, t0, nt, V, tb, raw, 4);
}
NOINLINE void winograd_input_2d(const wgeom_t *g, const float *src, long t0, int nt, float *V,
                                float *tb, float *raw) {
  winograd_input_nz(g, src, t0, nt, V, tb, raw, 1);
}
static void winograd_input(const wgeom_t *g, const float *src, long t0, int nt, float *V,
                           float *tb, float *raw) {
  if (g->KD == 3)
    winograd_input_3d(g, src, t0, nt, V, tb, raw);
  else
    winograd_input_2d(g, src, t0, nt, V, tb, raw);
}

/* Scratch floats of one thread of a Winograd call (V, M or Y, tb, raw). */
INLINE size_t winograd_thread_floats(const wgeom_t *g) {
  return (size_t)g->NP * g->T * (g->C4 + g->L4) + (size_t)128 * g->C4;
}

/*
 * Winograd convolution of the tiles [T0, T1) with the transformed filter U (winograd_filter):
 * each tile writes its own 2x2x2 outputs only, and its result does not depend on the
 * batches it is computed in, so any split of the tiles gives the same bits.
 */
INLINE void winograd_conv_nz(const wgeom_t *gp, const float *src, const float *U, float *out,
                             long T0, long NT, char *scratch, const int NZ) {
  const wgeom_t g = *gp;
  const int C = g.C, C4 = g.C4, L = g.L, L4 = g.L4, T = g.T;
  const int Dt = g.Dt, Ht = g.Ht, Wt = g.Wt, NP = g.NP;
  const int ZD = NZ == 4 ? 2 : 1;
  float *V = bump(&scratch, 4 * (size_t)NP * T * C4);
  float *M = bump(&scratch, 4 * (size_t)NP * T * L4);
  float *tb = bump(&scratch, 4 * (size_t)64 * C4);
  float *raw = bump(&scratch, 4 * (size_t)64 * C4);
  for (long t0 = T0; t0 < NT; t0 += T) {
    const int nt = NT - t0 < T ? (int)(NT - t0) : T;
    winograd_input(&g, src, t0, nt, V, tb, raw);
    /* products: M[xi][t][L4] = V[xi][t][:C] x U[xi][:C][L4] */
    for (int xi = 0; xi < NP; xi++) {
      const float *Vx = V + (size_t)xi * T * C4;
      float *Mx = M + (size_t)xi * T * L4;
      for (int off = 0; off < L; off += CHUNK) {
        const int CW = chunk_width(L, off);
        const float *Uc = U + (size_t)NP * C * off + (size_t)xi * C * CW;
        WGEMM[CW / 4 - 1](Vx, C4, C, Uc, Mx + off, L4, nt);
      }
    }
    /* output transform */
    for (int t = 0; t < nt; t++) {
      int b, tz, ty, tx;
      tile_of(&g, t0 + t, &b, &tz, &ty, &tx);
      const int zc = imin(ZD, Dt - ZD * tz), yc = imin(2, Ht - 2 * ty), xc = imin(2, Wt - 2 * tx);
      for (int v = 0; v < L4; v += 4) {
        f4 y[2][2][2];
        const size_t ms = (size_t)T * L4;
        const float *mp = M + (size_t)t * L4 + v;
        for (int i = 0; i < NZ; i++) { /* 2D: i = 0 only, y[0] = r */
          f4 r[2][2];
          for (int j = 0; j < 4; j++) {
            const float *q = mp + (size_t)(i * 4 + j) * 4 * ms;
            const f4 a0 = wasm_v128_load(q), a1 = wasm_v128_load(q + ms);
            const f4 a2 = wasm_v128_load(q + 2 * ms), a3 = wasm_v128_load(q + 3 * ms);
            const f4 t0 = wasm_f32x4_add(wasm_f32x4_add(a0, a1), a2);
            const f4 t1 = wasm_f32x4_sub(wasm_f32x4_sub(a1, a2), a3);
            if (j == 0) {
              r[0][0] = t0;
              r[0][1] = t1;
            } else if (j == 1) {
              r[0][0] = wasm_f32x4_add(r[0][0], t0);
              r[0][1] = wasm_f32x4_add(r[0][1], t1);
              r[1][0] = t0;
              r[1][1] = t1;
            } else if (j == 2) {
              r[0][0] = wasm_f32x4_add(r[0][0], t0);
              r[0][1] = wasm_f32x4_add(r[0][1], t1);
              r[1][0] = wasm_f32x4_sub(r[1][0], t0);
              r[1][1] = wasm_f32x4_sub(r[1][1], t1);
            } else {
              r[1][0] = wasm_f32x4_sub(r[1][0], t0);
              r[1][1] = wasm_f32x4_sub(r[1][1], t1);
            }
          }
          for (int j = 0; j < 2; j++)
            for (int k = 0; k < 2; k++) {
              if (i == 0) {
                y[0][j][k] = r[j][k];
              } else if (i == 1) {
                y[0][j][k] = wasm_f32x4_add(y[0][j][k], r[j][k]);
                y[1][j][k] = r[j][k];
              } else if (i == 2) {
                y[0][j][k] = wasm_f32x4_add(y[0][j][k], r[j][k]);
                y[1][j][k] = wasm_f32x4_sub(y[1][j][k], r[j][k]);
              } else {
                y[1][j][k] = wasm_f32x4_sub(y[1][j][k], r[j][k]);
              }
            }
        }
        const int nl = imin(4, L - v);
        for (int i = 0; i < zc; i++)
          for (int j = 0; j < yc; j++)
            for (int k = 0; k < xc; k++) {
              float *o =
                  out + ((((size_t)b * Dt + ZD * tz + i) * Ht + 2 * ty + j) * Wt + 2 * tx + k) * L +
                  v;
              if (nl == 4) {
                wasm_v128_store(o, y[i][j][k]);
              } else {
                float tmp[4] __attribute__((aligned(16)));
                wasm_v128_store(tmp, y[i][j][k]);
                for (int l = 0; l < nl; l++) o[l] = tmp[l];
              }
            }
      }
    }
  }
}

NOINLINE void winograd_conv_3d(const wgeom_t *g, const float *src, const float *U, float *out,
                               long T0, long NT, char *scratch) {
  winograd_conv_nz(g, src, U, out, T0, NT, scratch, 4);
}
NOINLINE void winograd_conv_2d(const wgeom_t *g, const float *src, const float *U, float *out,
                               long T0, long NT, char *scratch) {
  winograd_conv_nz(g, src, U, out, T0, NT, scratch, 1);
}
static void winograd_conv(const wgeom_t *g, const float *src, const float *U, float *out,
                          long T0, long NT, char *scratch) {
  if (g->KD == 3)
    winograd_conv_3d(g, src, U, out, T0, NT, scratch);
  else
    winograd_conv_2d(g, src, U, out, T0, NT, scratch);
}

/*
 * Filter gradient, the adjoint of winograd_conv's forward: with Yh_t = A dy_t A^T (each
 * 2-point axis expanded to 4: (d0, d0 + d1, d0 - d1, -d1)),
 *   dU[xi][c][l] = sum_t V_t[xi][c] * Yh_t[xi][l]     (products summed over tiles)
 *   dw[k][c][l]  = sum_xi G3[xi][k] * dU[xi][c][l]     (G3 = G x G x G)
 * x is the source (C = Ci), dy the target (L = Co); dy outside the target counts as 0.
 */
/* dU (zeroed first) = the transformed filter gradient summed over the tiles [T0, NT). */
INLINE void winograd_filter_grad_zd(const wgeom_t *gp, const float *x, const float *dy,
                                    float *dU, long T0, long NT, char *scratch, const int ZD) {
  const wgeom_t g = *gp;
  const int C = g.C, C4 = g.C4, L = g.L, L4 = g.L4, T = g.T;
  const int Dt = g.Dt, Ht = g.Ht, Wt = g.Wt, NP = g.NP;
  float *V = bump(&scratch, 4 * (size_t)NP * T * C4);
  float *Y = bump(&scratch, 4 * (size_t)NP * T * L4);
  float *tb = bump(&scratch, 4 * (size_t)64 * C4);
  float *raw = bump(&scratch, 4 * (size_t)64 * C4);
  zero_f32(dU, (size_t)NP * C * L4);
  for (long t0 = T0; t0 < NT; t0 += T) {
    const int nt = NT - t0 < T ? (int)(NT - t0) : T;
    winograd_input(&g, x, t0, nt, V, tb, raw);
    /* dy transform: Y[xi][t][L4] */
    for (int t = 0; t < nt; t++) {
      int b, tz, ty, tx;
      tile_of(&g, t0 + t, &b, &tz, &ty, &tx);
      for (int v = 0; v < L4; v += 4) {
        f4 e[2][2][2];
        for (int i = 0; i < ZD; i++)
          for (int j = 0; j < 2; j++)
            for (int k = 0; k < 2; k++) {
              const int z = ZD * tz + i, y = 2 * ty + j, xx = 2 * tx + k;
              if (z >= Dt || y >= Ht || xx >= Wt) {
                e[i][j][k] = wasm_f32x4_splat(0.0f);
                continue;
              }
              const float *q = dy + ((((size_t)b * Dt + z) * Ht + y) * Wt + xx) * L + v;
              if (v + 4 <= L) {
                e[i][j][k] = wasm_v128_load(q);
              } else {
                float tmp[4] __attribute__((aligned(16))) = {0.0f, 0.0f, 0.0f, 0.0f};
                for (int l = 0; l < L - v; l++) tmp[l] = q[l];
                e[i][j][k] = wasm_v128_load(tmp);
              }
            }
        f4 ex[2][2][4];
        for (int i = 0; i < ZD; i++)
          for (int j = 0; j < 2; j++) {
            const f4 a0 = e[i][j][0], a1 = e[i][j][1];
            ex[i][j][0] = a0;
            ex[i][j][1] = wasm_f32x4_add(a0, a1);
            ex[i][j][2] = wasm_f32x4_sub(a0, a1);
            ex[i][j][3] = wasm_f32x4_neg(a1);
          }
        const size_t ys = (size_t)T * L4;
        float *o = Y + (size_t)t * L4 + v;
        for (int k = 0; k < 4; k++) {
          f4 ey[2][4];
          for (int i = 0; i < ZD; i++) {
            const f4 a0 = ex[i][0][k], a1 = ex[i][1][k];
            ey[i][0] = a0;
            ey[i][1] = wasm_f32x4_add(a0, a1);
            ey[i][2] = wasm_f32x4_sub(a0, a1);
            ey[i][3] = wasm_f32x4_neg(a1);
          }
          if (ZD == 1) { /* 2D: the points are (j, k) */
            for (int j = 0; j < 4; j++) wasm_v128_store(o + (size_t)(j * 4 + k) * ys, ey[0][j]);
            continue;
          }
          for (int j = 0; j < 4; j++) {
            const f4 a0 = ey[0][j], a1 = ey[1][j];
            wasm_v128_store(o + (size_t)((0 * 4 + j) * 4 + k) * ys, a0);
            wasm_v128_store(o + (size_t)((1 * 4 + j) * 4 + k) * ys, wasm_f32x4_add(a0, a1));
            wasm_v128_store(o + (size_t)((2 * 4 + j) * 4 + k) * ys, wasm_f32x4_sub(a0, a1));
            wasm_v128_store(o + (size_t)((3 * 4 + j) * 4 + k) * ys, wasm_f32x4_neg(a1));
          }
        }
      }
    }
    /* products, summed over the tiles: dU[xi][c][:] += V[xi][t][c] * Y[xi][t][:] */
    for (int xi = 0; xi < NP; xi++) {
      const float *Vx = V + (size_t)xi * T * C4;
      const float *Yx = Y + (size_t)xi * T * L4;
      for (int off = 0; off < L; off += CHUNK) {
        const int CW = chunk_width(L, off);
        const int CV = CW / 4;
        float *dUc = dU + (size_t)NP * C * off + (size_t)xi * C * CW;
        const int J = FILTER_J[CV - 1];
        int c = 0;
        for (; c + J <= C; c += J)
          FILTER[CV - 1][J - 1](Vx + c, C4, Yx + off, L4, nt, dUc + (size_t)c * CW);
        if (c < C)
          FILTER[CV - 1][C - c - 1](Vx + c, C4, Yx + off, L4, nt, dUc + (size_t)c * CW);
      }
    }
  }
}

NOINLINE void winograd_filter_grad_3d(const wgeom_t *g, const float *x, const float *dy,
                                      float *dU, long T0, long NT, char *scratch) {
  winograd_filter_grad_zd(g, x, dy, dU, T0, NT, scratch, 2);
}
NOINLINE void winograd_filter_grad_2d(const wgeom_t *g, const float *x, const float *dy,
                                      float *dU, long T0, long NT, char *scratch) {
  winograd_filter_grad_zd(g, x, dy, dU, T0, NT, scratch, 1);
}
static void winograd_filter_grad(const wgeom_t *g, const float *x, const float *dy, float *dU,
                                 long T0, long NT, char *scratch) {
  if (g->KD == 3)
    winograd_filter_grad_3d(g, x, dy, dU, T0, NT, scratch);
  else
    winograd_filter_grad_2d(g, x, dy, dU, T0, NT, scratch);
}

/*
 * dw[k][c][l] = sum_xi G3[xi][k] dU[xi][c][l]: dw [KD, 3, 3, C, L] from dU (chunked); KD = 1:
 * G2 = G x G over the 16 points.
 */
static void winograd_filter_finish(const float *dU, float *dw, int C, int L, int KD) {
  const int NP = KD == 3 ? 64 : 16;
  for (int off = 0; off < L; off += CHUNK) {
    const int CW = chunk_width(L, off);
    const int nv = imin(CW, L - off);
    const float *dUc = dU + (size_t)NP * C * off;
    for (int kz = 0; kz < KD; kz++)
      for (int ky = 0; ky < 3; ky++)
        for (int kx = 0; kx < 3; kx++)
          for (int c = 0; c < C; c++) {
            f4 acc[CHUNK / 4];
            for (int v = 0; v < CW / 4; v++) acc[v] = wasm_f32x4_splat(0.0f);
            for (int xi = 0; xi < NP; xi++) {
              const float gg = (KD == 3 ? WG[xi >> 4][kz] : 1.0f) * WG[(xi >> 2) & 3][ky] *
                               WG[xi & 3][kx];
              if (gg == 0.0f) continue;
              const f4 gv = wasm_f32x4_splat(gg);
              const float *q = dUc + ((size_t)xi * C + c) * CW;
              for (int v = 0; v < CW / 4; v++)
                acc[v] = wasm_f32x4_add(acc[v], wasm_f32x4_mul(gv, wasm_v128_load(q + 4 * v)));
            }
            float tmp[CHUNK] __attribute__((aligned(16)));
            for (int v = 0; v < CW / 4; v++) wasm_v128_store(tmp + 4 * v, acc[v]);
            float *o = dw + ((size_t)((kz * 3 + ky) * 3 + kx) * C + c) * L + off;
            for (int l = 0; l < nv; l++) o[l] = tmp[l];
          }
  }
}

/* ------------------------------------------------------------------------------------ */
/* Filter gradient engine.                                                               */

/* dwp (packed, zeroed first) = the filter gradient summed over target rows [u0, u1). */
static void filter_grad(geom_t *g, const float *x, const float *dy, float *dwp, long u0,
                        long u1) {
  const int C = g->C, L = g->L;
  const int K3 = g->KD * g->KH * g->KW;
  const size_t src_batch = (size_t)g->Ds * g->Hs * g->Ws * C;
  zero_f32(dwp, (size_t)K3 * C * ((L + 3) & ~3));
  for (long u = u0; u < u1; u++) {
    const int py = (int)(u % g->Ht), pz = (int)(u / g->Ht % g->Dt);
    const int b = (int)(u / g->Ht / g->Dt);
    const float *sb = x + b * src_batch;
    {
      const int nz = taps1d(0, pz, g->KD, g->sd, g->pf, g->dd, g->Ds, g->zslot, g->zsrc);
      {
        const int ny = taps1d(0, py, g->KH, g->sh, g->pt, g->dh, g->Hs, g->yslot, g->ysrc);
        const float *dyrow = dy + (((size_t)b * g->Dt + pz) * g->Ht + py) * g->Wt * L;
        for (int r = 0; r < g->nruns; r++) {
          const run_t *R = &g->runs[r];
          const int ntaps = row_taps(g, nz, ny, R);
          const int xstep = R->sstep * C;
          const int dystep = R->pstep * L;
          for (int off = 0; off < L; off += CHUNK) {
            const int CW = chunk_width(L, off);
            const int CV = CW / 4;
            float *wc = dwp + (size_t)K3 * C * off;
            const float *d = dyrow + (size_t)R->p0 * L + off;
            const int J = FILTER_J[CV - 1];
            for (int t = 0; t < ntaps; t++) {
              const tap_t *T = &g->taps[t];
              int j = 0;
              for (; j + J <= T->len; j += J)
                FILTER[CV - 1][J - 1](sb + T->s + j, xstep, d, dystep, R->count,
                                      wc + (size_t)(T->w + j) * CW);
              if (j < T->len)
                FILTER[CV - 1][T->len - j - 1](sb + T->s + j, xstep, d, dystep, R->count,
                                               wc + (size_t)(T->w + j) * CW);
            }
          }
        }
      }
    }
  }
}

/* ------------------------------------------------------------------------------------ */
/* Exports.                                                                              */

INLINE size_t packed_floats(const int *P, int op) {
  const size_t K3 = (size_t)P[P_KD] * P[P_KH] * P[P_KW];
  const int Ci = P[P_CI], Co = P[P_CO];
  if (op == OP_BWD_INPUT) return K3 * Co * ((Ci + 3) & ~3);
  return K3 * Ci * ((Co + 3) & ~3);
}

/*
 * Winograd geometry of an op: forward and filter gradient read x (C = Ci) and target y
 * (L = Co); the input gradient (stride 1) is a convolution of dy (C = Co) with the flipped,
 * transposed filter into dx (L = Ci), front padding K - 1 - pad.
 */
static void wgeom_of(const int *P, int op, wgeom_t *g) {
  const int bwd = op == OP_BWD_INPUT;
  g->B = P[P_B];
  g->Ds = bwd ? P[P_DO] : P[P_D];
  g->Hs = bwd ? P[P_HO] : P[P_H];
  g->Ws = bwd ? P[P_WO] : P[P_W];
  g->C = bwd ? P[P_CO] : P[P_CI];
  g->L = bwd ? P[P_CI] : P[P_CO];
  g->C4 = (g->C + 3) & ~3;
  g->L4 = (g->L + 3) & ~3;
  g->Dt = bwd ? P[P_D] : P[P_DO];
  g->Ht = bwd ? P[P_H] : P[P_HO];
  g->Wt = bwd ? P[P_W] : P[P_WO];
  g->KD = P[P_KD];
  g->NP = g->KD == 3 ? 64 : 16;
  g->pf = bwd ? g->KD - 1 - P[P_PF] : P[P_PF];
  g->pt = bwd ? 2 - P[P_PT] : P[P_PT];
  g->pl = bwd ? 2 - P[P_PL] : P[P_PL];
  g->T = winograd_batch(g->C4, g->L4);
  g->nTz = g->KD == 3 ? (g->Dt + 1) / 2 : g->Dt;
  g->nTy = (g->Ht + 1) / 2;
  g->nTx = (g->Wt + 1) / 2;
}

/*
 * Threaded calls. Work is split into "units": Winograd tiles (2x2x2 outputs) where
 * winograd_applies, else target rows (b, z, y) of the direct method (target: y for the
 * forward and the filter gradient, dx for the input gradient). Each unit's outputs depend
 * on nothing but the unit, so the forward and the input gradient give the same bits for any
 * split. The filter gradient is a sum over units: it is split into conv_chunks(P) fixed
 * chunks (from the shapes only, never from the thread count), each summed into a partial
 * of its own, and the partials are added in chunk order (conv_filter_reduce), so it is
 * bit-identical for any thread count too.
 *
 * JS calls: conv_prepare (one thread), then conv_gather over unit ranges (forward, input
 * gradient) or conv_filter_chunks over chunk ranges, conv_filter_reduce over element
 * ranges and conv_filter_finish (one thread) (filter gradient).
 */

/** Work units of an op (see above). */
__attribute__((export_name("conv_units"))) double conv_units(const int *P, int op) {
  if (winograd_applies(P, op)) {
    wgeom_t g;
    wgeom_of(P, op, &g);
    return (double)g.B * g.nTz * g.nTy * g.nTx;
  }
  if (op == OP_BWD_INPUT) return (double)P[P_B] * P[P_D] * P[P_H];
  return (double)P[P_B] * P[P_DO] * P[P_HO];
}

/** Floats of one filter-gradient partial (packed filter, or its Winograd transform). */
__attribute__((export_name("conv_partial_floats"))) size_t conv_partial_floats(const int *P) {
  if (winograd_applies(P, OP_BWD_FILTER))
    return (size_t)(P[P_KD] == 3 ? 64 : 16) * P[P_CI] * ((P[P_CO] + 3) & ~3);
  return packed_floats(P, OP_BWD_FILTER);
}

#ifndef FILTER_CHUNKS
#define FILTER_CHUNKS 24
#endif

/**
 * Fixed chunks of the filter gradient: 24 (1, 2, 3, 4, 6 and 8 threads share them evenly),
 * fewer when there are fewer units or the partials would outgrow the input x.
 */
__attribute__((export_name("conv_chunks"))) int conv_chunks(const int *P) {
  const double units = conv_units(P, OP_BWD_FILTER);
  const double x = (double)P[P_B] * P[P_D] * P[P_H] * P[P_W] * P[P_CI];
  double n = x / (double)conv_partial_floats(P);
  if (n > FILTER_CHUNKS) n = FILTER_CHUNKS;
  if (n > units) n = units;
  return n < 1 ? 1 : (int)n;
}

/** Bytes of the shared buffer: packed or transformed filter, or the filter-gradient partials. */
__attribute__((export_name("conv_shared_bytes"))) size_t conv_shared_bytes(const int *P, int op) {
  if (op == OP_BWD_FILTER) return 4 * conv_partial_floats(P) * (size_t)conv_chunks(P);
  if (winograd_applies(P, op)) {
    wgeom_t g;
    wgeom_of(P, op, &g);
    return 4 * (size_t)g.NP * g.C * g.L4;
  }
  return 4 * packed_floats(P, op);
}

/** Bytes of scratch each thread needs (its own: tap tables, or Winograd batches). */
__attribute__((export_name("conv_thread_bytes"))) size_t conv_thread_bytes(const int *P, int op) {
  if (winograd_applies(P, op)) {
    wgeom_t g;
    wgeom_of(P, op, &g);
    return 4 * winograd_thread_floats(&g) + 5 * 16 + 64;
  }
  const int Wt = op == OP_BWD_INPUT ? P[P_W] : P[P_WO];
  const size_t KW = (size_t)P[P_KW];
  size_t n = 0;
  n += align16(sizeof(int) * Wt) + 2 * align16(sizeof(int) * Wt * KW);
  n += align16(sizeof(run_t) * Wt);
  n += 2 * align16(sizeof(int) * P[P_KD]) + 2 * align16(sizeof(int) * P[P_KH]);
  n += align16(sizeof(tap_t) * P[P_KD] * P[P_KH] * KW);
  return n + 64;
}

/**
 * Prepares the shared buffer of a forward (op 0) or input-gradient (op 1) call: w [KD, KH,
 * KW, Ci, Co] packed per chunk of output lanes, or its Winograd transform. One thread.
 */
__attribute__((export_name("conv_prepare"))) void conv_prepare(const float *w, const int *P,
                                                               int op, float *shared) {
  if (winograd_applies(P, op)) {
    wgeom_t g;
    wgeom_of(P, op, &g);
    winograd_filter(w, shared, g.C, g.L, g.KD, op == OP_BWD_INPUT);
  } else if (op == OP_FWD) {
    pack_forward(w, shared, P[P_KD] * P[P_KH] * P[P_KW], P[P_CI], P[P_CO]);
  } else {
    pack_input_grad(w, shared, P[P_KD], P[P_KH], P[P_KW], P[P_CI], P[P_CO]);
  }
}

/**
 * Units [u0, u1) of the forward y = conv3d(x, w) (op 0: src x [B, D, H, W, Ci], out y
 * [B, Do, Ho, Wo, Co]) or of the input gradient (op 1: src dy, out dx [B, D, H, W, Ci]),
 * with the shared buffer of conv_prepare and this thread's scratch (conv_thread_bytes).
 */
__attribute__((export_name("conv_gather"))) void conv_gather(const float *src,
                                                             const float *shared, float *out,
                                                             const int *P, int op,
                                                             char *scratch, double u0,
                                                             double u1) {
  scratch = (char *)align16((size_t)scratch);
  if (winograd_applies(P, op)) {
    wgeom_t g;
    wgeom_of(P, op, &g);
    winograd_conv(&g, src, shared, out, (long)u0, (long)u1, scratch);
    return;
  }
  geom_t g;
  geom_init(&g, P, op == OP_FWD ? 0 : 1, &scratch);
  gather_conv(&g, src, shared, out, (long)u0, (long)u1);
}

/** Units of chunk k of the filter gradient: [k * U / n, (k + 1) * U / n). */
INLINE long chunk_start(long units, int n, int k) { return (long)((double)units * k / n); }

/**
 * Filter-gradient partials of chunks [k0, k1) (of conv_chunks(P)): partial k (at shared +
 * k * conv_partial_floats) = the gradient summed over the units of chunk k. x [B, D, H, W,
 * Ci], dy [B, Do, Ho, Wo, Co] (16 bytes of readable slack after dy).
 */
__attribute__((export_name("conv_filter_chunks"))) void conv_filter_chunks(
    const float *x, const float *dy, const int *P, float *shared, char *scratch, int k0, int k1) {
  scratch = (char *)align16((size_t)scratch);
  const int n = conv_chunks(P);
  const long units = (long)conv_units(P, OP_BWD_FILTER);
  const size_t pf = conv_partial_floats(P);
  if (winograd_applies(P, OP_BWD_FILTER)) {
    wgeom_t g;
    wgeom_of(P, OP_BWD_FILTER, &g);
    for (int k = k0; k < k1; k++)
      winograd_filter_grad(&g, x, dy, shared + k * pf, chunk_start(units, n, k),
                           chunk_start(units, n, k + 1), scratch);
    return;
  }
  geom_t g;
  geom_init(&g, P, 0, &scratch);
  for (int k = k0; k < k1; k++)
    filter_grad(&g, x, dy, shared + k * pf, chunk_start(units, n, k),
                chunk_start(units, n, k + 1));
}

/** partial 0 [e] += partial 1 [e] + ... + partial n-1 [e] (in that order), e in [e0, e1). */
__attribute__((export_name("conv_filter_reduce"))) void conv_filter_reduce(float *shared,
                                                                           int n, int count,
                                                                           int e0, int e1) {
  for (int k = 1; k < n; k++) {
    const float *p = shared + (size_t)k * count;
    int e = e0;
    for (; e + 4 <= e1; e += 4)
      wasm_v128_store(shared + e, wasm_f32x4_add(wasm_v128_load(shared + e),
                                                 wasm_v128_load(p + e)));
    for (; e < e1; e++) shared[e] += p[e];
  }
}

/** dw [KD, KH, KW, Ci, Co] from the reduced partial 0. One thread. */
__attribute__((export_name("conv_filter_finish"))) void conv_filter_finish(const float *shared,
                                                                           float *dw,
                                                                           const int *P) {
  const int K3 = P[P_KD] * P[P_KH] * P[P_KW], Ci = P[P_CI], Co = P[P_CO];
  if (winograd_applies(P, OP_BWD_FILTER)) {
    winograd_filter_finish(shared, dw, Ci, Co, P[P_KD]);
    return;
  }
  for (int off = 0; off < Co; off += CHUNK) {
    const int CW = chunk_width(Co, off);
    const int nv = imin(CW, Co - off);
    const float *pc = shared + (size_t)K3 * Ci * off;
    for (int r = 0; r < K3 * Ci; r++)
      for (int l = 0; l < nv; l++) dw[(size_t)r * Co + off + l] = pc[(size_t)r * CW + l];
  }
}

/**
 * out[s, :] = sum over i with ids[i] == s of x[i, :], s in [0, num_segments); ids outside
 * are dropped. x [n, inner], out [num_segments, inner].
 */
__attribute__((export_name("unsorted_segment_sum"))) void unsorted_segment_sum(
    const float *x, const int *ids, float *out, int n, int inner, int num_segments) {
  zero_f32(out, (size_t)num_segments * inner);
  for (int i = 0; i < n; i++) {
    const int s = ids[i];
    if (s < 0 || s >= num_segments) continue;
    const float *xi = x + (size_t)i * inner;
    float *o = out + (size_t)s * inner;
    int j = 0;
    for (; j + 4 <= inner; j += 4)
      wasm_v128_store(o + j, wasm_f32x4_add(wasm_v128_load(o + j), wasm_v128_load(xi + j)));
    for (; j < inner; j++) o[j] += xi[j];
  }
}
