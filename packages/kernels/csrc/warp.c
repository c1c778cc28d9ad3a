/*
 * regkit warp kernels: bi/trilinear and nearest sampling, zeros and border padding,
 * forward and backward, float32. Freestanding C compiled to WebAssembly
 * (scripts/build-wasm.sh); no libc, no imports.
 *
 * Semantics are those of @regkit/core's JavaScript kernel (packages/core/src/
 * warp_kernel_js.ts): torch grid_sample(align_corners=True) with the sample position
 * p = voxel index + field, 2D run as 3D with a depth of 1.
 *   linear: each of the 2^nd corners with an index outside [0, S-1] contributes 0;
 *   border: p is first clamped to [0, S-1] and the field gradient is 0 where p was outside;
 *   nearest: index = round-half-to-even(p) (f64.nearest on the exact double position, as
 *            JavaScript computes it), field gradient 0.
 * Linear positions are formed in float32 (JavaScript: float64): below 1e-5 voxel apart at
 * the sizes of medical images; it matters only within one float32 ulp of an integer
 * position, where the gradient has a kink. Linear sampling multiplies outside corners by a
 * weight of 0 instead of skipping them, so a non-finite neighbour of an in-range sample
 * propagates.
 *
 * Memory: JS owns everything above heap_base() (a bump allocator in this module's
 * exported memory, reset on every call). Layouts are channels last:
 * image [B, D, H, W, C], field [B, Do, Ho, Wo, nd], out / dy [B, Do, Ho, Wo, C].
 */

typedef __SIZE_TYPE__ size_t;

extern unsigned char __heap_base;

/** First free byte after the stack and static data: JS allocates from here. */
__attribute__((export_name("heap_base"))) size_t heap_base(void) {
  return (size_t)&__heap_base;
}

#define INLINE static inline __attribute__((always_inline))

/* Mode bits of the exported functions. */
#define MODE_NEAREST 1
#define MODE_BORDER 2
/* backward only: skip the image gradient (dimg unused) or the field gradient (d_field and
   the image unused) */
#define MODE_NO_IMAGE 4
#define MODE_NO_FIELD 8

/** One axis of a linear sample: clamped corner indices, weights and weight derivatives. */
typedef struct {
  int i0, i1;   /* corner indices, 0 when the corner is outside (its weight is then 0) */
  float w0, w1; /* interpolation weights (0 for outside corners) */
  float d0, d1; /* d(weight)/d(position): 0 for outside corners and clamped positions */
} axis_t;

INLINE axis_t linear_axis(float p, int size, int border) {
  const float hi = (float)(size - 1);
  float in = 1.0f;
  if (border) {
    if (p < 0.0f || p > hi) in = 0.0f;
    p = p < 0.0f ? 0.0f : p;
    p = p > hi ? hi : p;
  }
  const float f = __builtin_floorf(p);
  const float t = p - f;
  /* float comparisons: false for NaN; the int conversion saturates (nontrapping-fptoint) */
  const int v0 = f >= 0.0f && f <= hi;
  const int v1 = f >= -1.0f && f <= hi - 1.0f;
  /* outside corners (weight 0) get the nearest in-range index, so every sample touches only
     voxels next to it (the backward pass scatters into per-chunk slabs of dImage) */
  int c = (int)f;
  c = c < -1 ? -1 : (c > size - 1 ? size - 1 : c);
  axis_t a;
  a.i0 = c < 0 ? 0 : c;
  a.i1 = c + 1 > size - 1 ? size - 1 : c + 1;
  a.w0 = v0 ? 1.0f - t : 0.0f;
  a.w1 = v1 ? t : 0.0f;
  a.d0 = v0 ? -in : 0.0f;
  a.d1 = v1 ? in : 0.0f;
  return a;
}

/**
 * Nearest index along one axis; -1 when outside (zeros padding). The position is
 * formed in double (exact, as in JavaScript), so rounding at .5 matches core's kernel.
 */
INLINE int nearest_axis(int i, float u, int size, int border) {
  double p = (double)i + (double)u;
  const double hi = (double)(size - 1);
  if (border) {
    p = p < 0.0 ? 0.0 : p;
    p = p > hi ? hi : p;
  }
  const double r = __builtin_rint(p); /* f64.nearest: round half to even */
  if (!(r >= 0.0 && r <= hi)) return border ? (r > hi ? size - 1 : 0) : -1;
  return (int)r;
}

INLINE void zero(float *p, size_t n) {
  for (size_t i = 0; i < n; i++) p[i] = 0.0f;
}

/* ---------------------------------------------------------------------------------- */
/* 4 output voxels at a time (linear, C = 1, W >= 2): positions, weights and indices in  */
/* SIMD; the two x corners of a sample load as one 64-bit pair. Measured against the     */
/* scalar code (-DWARP_SIMD=0, which clang auto-vectorises for the forward pass) and      */
/* against gathering the 2^nd corners one float at a time: see README.md.               */
/* ---------------------------------------------------------------------------------- */

/* -DWARP_SIMD=0 builds the scalar code only (for measurements). */
#ifndef WARP_SIMD
#define WARP_SIMD 1
#endif

#if WARP_SIMD
#include <wasm_simd128.h>

typedef struct {
  v128_t fi;             /* i32x4 floor of the position (saturated) */
  v128_t i0, i1;         /* i32x4 corner indices (0 for outside corners) */
  v128_t w0, w1, d0, d1; /* f32x4, as in axis_t */
} axis4_t;

INLINE axis4_t linear_axis4(v128_t p, int size, int border) {
  const v128_t zero = wasm_f32x4_splat(0.0f);
  const v128_t one = wasm_f32x4_splat(1.0f);
  const v128_t hi = wasm_f32x4_splat((float)(size - 1));
  v128_t in = one;
  if (border) {
    const v128_t below = wasm_f32x4_lt(p, zero), above = wasm_f32x4_gt(p, hi);
    in = wasm_v128_andnot(one, wasm_v128_or(below, above));
    p = wasm_v128_bitselect(zero, p, below);
    p = wasm_v128_bitselect(hi, p, above);
  }
  const v128_t f = wasm_f32x4_floor(p);
  const v128_t t = wasm_f32x4_sub(p, f);
  const v128_t v0 = wasm_v128_and(wasm_f32x4_ge(f, zero), wasm_f32x4_le(f, hi));
  const v128_t v1 = wasm_v128_and(wasm_f32x4_ge(f, wasm_f32x4_splat(-1.0f)),
                                  wasm_f32x4_le(f, wasm_f32x4_sub(hi, one)));
  const v128_t fi = wasm_i32x4_trunc_sat_f32x4(f);
  /* clamped as in linear_axis: outside corners take the nearest in-range index */
  const v128_t c = wasm_i32x4_min(wasm_i32x4_max(fi, wasm_i32x4_splat(-1)), wasm_i32x4_splat(size - 1));
  axis4_t a;
  a.fi = fi;
  a.i0 = wasm_i32x4_max(c, wasm_i32x4_splat(0));
  a.i1 = wasm_i32x4_min(wasm_i32x4_add(c, wasm_i32x4_splat(1)), wasm_i32x4_splat(size - 1));
  a.w0 = wasm_v128_and(v0, wasm_f32x4_sub(one, t));
  a.w1 = wasm_v128_and(v1, t);
  a.d0 = wasm_v128_and(v0, wasm_f32x4_neg(in));
  a.d1 = wasm_v128_and(v1, in);
  return a;
}

INLINE void scatter_add4(float *base, v128_t idx, v128_t v) {
  base[wasm_i32x4_extract_lane(idx, 0)] += wasm_f32x4_extract_lane(v, 0);
  base[wasm_i32x4_extract_lane(idx, 1)] += wasm_f32x4_extract_lane(v, 1);
  base[wasm_i32x4_extract_lane(idx, 2)] += wasm_f32x4_extract_lane(v, 2);
  base[wasm_i32x4_extract_lane(idx, 3)] += wasm_f32x4_extract_lane(v, 3);
}

#define F4(a, b) wasm_f32x4_mul(a, b)
#define A4(a, b) wasm_f32x4_add(a, b)
#define I4(a, b) wasm_i32x4_add(a, b)

/** Positions of 4 voxels (z, y, x .. x+3): field components deinterleaved, plus the grid. */
INLINE void positions4(const float *field, int z, int y, int x, const int nd, v128_t *pz,
                       v128_t *py, v128_t *px) {
  const v128_t ramp = wasm_f32x4_make((float)x, (float)(x + 1), (float)(x + 2), (float)(x + 3));
  if (nd == 2) {
    const v128_t v0 = wasm_v128_load(field), v1 = wasm_v128_load(field + 4);
    *pz = wasm_f32x4_splat(0.0f);
    *py = A4(wasm_f32x4_splat((float)y), wasm_i32x4_shuffle(v0, v1, 0, 2, 4, 6));
    *px = A4(ramp, wasm_i32x4_shuffle(v0, v1, 1, 3, 5, 7));
  } else {
    const v128_t v0 = wasm_v128_load(field), v1 = wasm_v128_load(field + 4);
    const v128_t v2 = wasm_v128_load(field + 8);
    const v128_t uz = wasm_i32x4_shuffle(wasm_i32x4_shuffle(v0, v1, 0, 3, 6, 0), v2, 0, 1, 2, 5);
    const v128_t uy = wasm_i32x4_shuffle(wasm_i32x4_shuffle(v0, v1, 1, 4, 7, 0), v2, 0, 1, 2, 6);
    const v128_t ux = wasm_i32x4_shuffle(wasm_i32x4_shuffle(v0, v1, 2, 5, 0, 0), v2, 0, 1, 4, 7);
    *pz = A4(wasm_f32x4_splat((float)z), uz);
    *py = A4(wasm_f32x4_splat((float)y), uy);
    *px = A4(ramp, ux);
  }
}

/**
 * The x axis as one pair of adjacent voxels [bx, bx + 1] per sample (bx clamped to
 * [0, W - 2], W >= 2), so both x corners load with one 64-bit load: the weights move to the
 * slot of their corner (the corner f + 1 = 0 sits in slot lo, the corner f = W - 1 in hi).
 */
typedef struct {
  v128_t bx;             /* i32x4 */
  v128_t lo, hi, dlo, dhi;
} xpair4_t;

INLINE xpair4_t x_pairs4(const axis4_t *a, int W) {
  const v128_t mlo = wasm_i32x4_eq(a->fi, wasm_i32x4_splat(-1));
  const v128_t mhi = wasm_i32x4_eq(a->fi, wasm_i32x4_splat(W - 1));
  xpair4_t x;
  x.bx = wasm_i32x4_min(wasm_i32x4_max(a->fi, wasm_i32x4_splat(0)), wasm_i32x4_splat(W - 2));
  x.lo = wasm_v128_bitselect(a->w1, wasm_v128_andnot(a->w0, mhi), mlo);
  x.hi = wasm_v128_bitselect(a->w0, wasm_v128_andnot(a->w1, mlo), mhi);
  x.dlo = wasm_v128_bitselect(a->d1, wasm_v128_andnot(a->d0, mhi), mlo);
  x.dhi = wasm_v128_bitselect(a->d0, wasm_v128_andnot(a->d1, mlo), mhi);
  return x;
}

/** Loads the pairs img[idx_k], img[idx_k + 1] of 4 samples as [first of each], [second of each]. */
INLINE void load_pairs4(const float *img, v128_t idx, v128_t *first, v128_t *second) {
  v128_t q0 = wasm_v128_load64_zero(img + wasm_i32x4_extract_lane(idx, 0));
  q0 = wasm_v128_load64_lane(img + wasm_i32x4_extract_lane(idx, 1), q0, 1);
  v128_t q1 = wasm_v128_load64_zero(img + wasm_i32x4_extract_lane(idx, 2));
  q1 = wasm_v128_load64_lane(img + wasm_i32x4_extract_lane(idx, 3), q1, 1);
  *first = wasm_i32x4_shuffle(q0, q1, 0, 2, 4, 6);
  *second = wasm_i32x4_shuffle(q0, q1, 1, 3, 5, 7);
}

/**
 * dimg[idx_k] += lo_k and dimg[idx_k + 1] += hi_k, one float at a time: neighbouring samples
 * often share voxels, and 64-bit read-modify-writes of overlapping pairs stall on store
 * forwarding (measured slower).
 */
INLINE void scatter_pairs4(float *dimg, v128_t idx, v128_t lo, v128_t hi) {
  scatter_add4(dimg, idx, lo);
  scatter_add4(dimg + 1, idx, hi);
}

INLINE void forward4(const float *img, const float *field, float *out, int z, int y, int x,
                     int D, int H, int W, const int nd, const int border) {
  v128_t pz, py, px;
  positions4(field, z, y, x, nd, &pz, &py, &px);
  const axis4_t ay = linear_axis4(py, H, border);
  const axis4_t ax = linear_axis4(px, W, border);
  const xpair4_t xp = x_pairs4(&ax, W);
  const v128_t Wv = wasm_i32x4_splat(W);
  const v128_t y0 = I4(wasm_i32x4_mul(ay.i0, Wv), xp.bx), y1 = I4(wasm_i32x4_mul(ay.i1, Wv), xp.bx);
  v128_t a, b;
  if (nd == 2) {
    load_pairs4(img, y0, &a, &b);
    const v128_t r0 = A4(F4(xp.lo, a), F4(xp.hi, b));
    load_pairs4(img, y1, &a, &b);
    const v128_t r1 = A4(F4(xp.lo, a), F4(xp.hi, b));
    wasm_v128_store(out, A4(F4(ay.w0, r0), F4(ay.w1, r1)));
  } else {
    const axis4_t az = linear_axis4(pz, D, border);
    const v128_t P = wasm_i32x4_splat(H * W);
    const v128_t z0 = wasm_i32x4_mul(az.i0, P), z1 = wasm_i32x4_mul(az.i1, P);
    v128_t s[2];
    for (int k = 0; k < 2; k++) {
      const v128_t zk = k ? z1 : z0;
      load_pairs4(img, I4(zk, y0), &a, &b);
      const v128_t r0 = A4(F4(xp.lo, a), F4(xp.hi, b));
      load_pairs4(img, I4(zk, y1), &a, &b);
      const v128_t r1 = A4(F4(xp.lo, a), F4(xp.hi, b));
      s[k] = A4(F4(ay.w0, r0), F4(ay.w1, r1));
    }
    wasm_v128_store(out, A4(F4(az.w0, s[0]), F4(az.w1, s[1])));
  }
}

INLINE void backward4(const float *dy, const float *img, const float *field, float *dimg,
                      float *d_field, int z, int y, int x, int D, int H, int W, const int nd,
                      const int border, const v128_t nshift, const int want_img,
                      const int want_field) {
  v128_t pz, py, px;
  positions4(field, z, y, x, nd, &pz, &py, &px);
  const v128_t g = wasm_v128_load(dy);
  const axis4_t ay = linear_axis4(py, H, border);
  const axis4_t ax = linear_axis4(px, W, border);
  const xpair4_t xp = x_pairs4(&ax, W);
  const v128_t Wv = wasm_i32x4_splat(W);
  const v128_t y0 = I4(wasm_i32x4_mul(ay.i0, Wv), xp.bx), y1 = I4(wasm_i32x4_mul(ay.i1, Wv), xp.bx);
  v128_t m0, m1;
  if (nd == 2) {
    if (want_img) {
      const v128_t gy0 = F4(g, ay.w0), gy1 = F4(g, ay.w1);
      scatter_pairs4(dimg, I4(y0, nshift), F4(gy0, xp.lo), F4(gy0, xp.hi));
      scatter_pairs4(dimg, I4(y1, nshift), F4(gy1, xp.lo), F4(gy1, xp.hi));
    }
    if (!want_field) return;
    load_pairs4(img, y0, &m0, &m1);
    const v128_t r0 = A4(F4(xp.lo, m0), F4(xp.hi, m1)), e0 = A4(F4(xp.dlo, m0), F4(xp.dhi, m1));
    load_pairs4(img, y1, &m0, &m1);
    const v128_t r1 = A4(F4(xp.lo, m0), F4(xp.hi, m1)), e1 = A4(F4(xp.dlo, m0), F4(xp.dhi, m1));
    const v128_t gy = F4(g, A4(F4(ay.d0, r0), F4(ay.d1, r1)));
    const v128_t gx = F4(g, A4(F4(ay.w0, e0), F4(ay.w1, e1)));
    wasm_v128_store(d_field, wasm_i32x4_shuffle(gy, gx, 0, 4, 1, 5));
    wasm_v128_store(d_field + 4, wasm_i32x4_shuffle(gy, gx, 2, 6, 3, 7));
  } else {
    const axis4_t az = linear_axis4(pz, D, border);
    const v128_t P = wasm_i32x4_splat(H * W);
    const v128_t z0 = wasm_i32x4_mul(az.i0, P), z1 = wasm_i32x4_mul(az.i1, P);
    v128_t a[2], ey[2], ex[2];
    for (int k = 0; k < 2; k++) {
      const v128_t zk = k ? z1 : z0;
      const v128_t b0 = I4(zk, y0), b1 = I4(zk, y1);
      if (want_img) {
        const v128_t wz = F4(g, k ? az.w1 : az.w0);
        const v128_t wzy0 = F4(wz, ay.w0), wzy1 = F4(wz, ay.w1);
        scatter_pairs4(dimg, I4(b0, nshift), F4(wzy0, xp.lo), F4(wzy0, xp.hi));
        scatter_pairs4(dimg, I4(b1, nshift), F4(wzy1, xp.lo), F4(wzy1, xp.hi));
      }
      if (!want_field) continue;
      load_pairs4(img, b0, &m0, &m1);
      const v128_t r0 = A4(F4(xp.lo, m0), F4(xp.hi, m1));
      const v128_t e0 = A4(F4(xp.dlo, m0), F4(xp.dhi, m1));
      load_pairs4(img, b1, &m0, &m1);
      const v128_t r1 = A4(F4(xp.lo, m0), F4(xp.hi, m1));
      const v128_t e1 = A4(F4(xp.dlo, m0), F4(xp.dhi, m1));
      a[k] = A4(F4(ay.w0, r0), F4(ay.w1, r1));
      ey[k] = A4(F4(ay.d0, r0), F4(ay.d1, r1));
      ex[k] = A4(F4(ay.w0, e0), F4(ay.w1, e1));
    }
    if (!want_field) return;
    const v128_t gz = F4(g, A4(F4(az.d0, a[0]), F4(az.d1, a[1])));
    const v128_t gy = F4(g, A4(F4(az.w0, ey[0]), F4(az.w1, ey[1])));
    const v128_t gx = F4(g, A4(F4(az.w0, ex[0]), F4(az.w1, ex[1])));
    wasm_v128_store(d_field,
                    wasm_i32x4_shuffle(wasm_i32x4_shuffle(gz, gy, 0, 4, 1, 5), gx, 0, 1, 4, 2));
    wasm_v128_store(d_field + 4,
                    wasm_i32x4_shuffle(wasm_i32x4_shuffle(gy, gx, 1, 5, 2, 6), gz, 0, 1, 6, 2));
    wasm_v128_store(d_field + 8,
                    wasm_i32x4_shuffle(gx, wasm_i32x4_shuffle(gz, gy, 3, 7, 3, 7), 2, 4, 5, 3));
  }
}

/* ---------------------------------------------------------------------------------- */
/* Three channels in 3D (displacement fields: composition, scaling and squaring): one    */
/* voxel at a time, its 3 channels in the lanes 0-2 of a vector (lane 3 is 0). The       */
/* operations and their order per channel are those of the scalar code, so the results  */
/* are bit-identical to it.                                                              */
/* ---------------------------------------------------------------------------------- */

/** p[0..2] into lanes 0-2 (lane 3 = 0); reads nothing past p[2]. */
INLINE v128_t load3(const float *p) {
  return wasm_v128_load32_lane(p + 2, wasm_v128_load64_zero(p), 2);
}

/** Lanes 0-2 of v into p[0..2]. */
INLINE void store3(float *p, v128_t v) {
  wasm_v128_store64_lane(p, v, 0);
  wasm_v128_store32_lane(p + 2, v, 2);
}

/** p[0..2] += v (lanes 0-2). */
INLINE void add3(float *p, v128_t v) { store3(p, wasm_f32x4_add(load3(p), v)); }

/** Sums of lanes 0-2 of a, b, c, d, each as (l0 + l1) + l2: [Σa, Σb, Σc, Σd]. */
INLINE v128_t hsum3x4(v128_t a, v128_t b, v128_t c, v128_t d) {
  const v128_t ab01 = wasm_i32x4_shuffle(a, b, 0, 4, 1, 5); /* a0 b0 a1 b1 */
  const v128_t cd01 = wasm_i32x4_shuffle(c, d, 0, 4, 1, 5); /* c0 d0 c1 d1 */
  const v128_t ab2 = wasm_i32x4_shuffle(a, b, 2, 6, 2, 6);  /* a2 b2 .. */
  const v128_t cd2 = wasm_i32x4_shuffle(c, d, 2, 6, 2, 6);  /* c2 d2 .. */
  const v128_t l0 = wasm_i32x4_shuffle(ab01, cd01, 0, 1, 4, 5);
  const v128_t l1 = wasm_i32x4_shuffle(ab01, cd01, 2, 3, 6, 7);
  const v128_t l2 = wasm_i32x4_shuffle(ab2, cd2, 0, 1, 4, 5);
  return wasm_f32x4_add(wasm_f32x4_add(l0, l1), l2);
}

#define S4(x) wasm_f32x4_splat(x)

INLINE void forward_c3(const float *img, const float *field, float *out, int z, int y, int x,
                       int D, int H, int W, const int border) {
  const size_t plane = (size_t)H * W;
  const axis_t ay = linear_axis((float)y + field[1], H, border);
  const axis_t ax = linear_axis((float)x + field[2], W, border);
  const axis_t az = linear_axis((float)z + field[0], D, border);
  const size_t y0 = (size_t)ay.i0 * W, y1 = (size_t)ay.i1 * W;
  const float w00 = ay.w0 * ax.w0, w01 = ay.w0 * ax.w1;
  const float w10 = ay.w1 * ax.w0, w11 = ay.w1 * ax.w1;
  const float *s0 = img + (size_t)az.i0 * plane * 3, *s1 = img + (size_t)az.i1 * plane * 3;
  const size_t o00 = (y0 + ax.i0) * 3, o01 = (y0 + ax.i1) * 3;
  const size_t o10 = (y1 + ax.i0) * 3, o11 = (y1 + ax.i1) * 3;
  const v128_t a = A4(A4(A4(F4(S4(w00), load3(s0 + o00)), F4(S4(w01), load3(s0 + o01))),
                         F4(S4(w10), load3(s0 + o10))),
                      F4(S4(w11), load3(s0 + o11)));
  const v128_t e = A4(A4(A4(F4(S4(w00), load3(s1 + o00)), F4(S4(w01), load3(s1 + o01))),
                         F4(S4(w10), load3(s1 + o10))),
                      F4(S4(w11), load3(s1 + o11)));
  store3(out, A4(F4(S4(az.w0), a), F4(S4(az.w1), e)));
}

INLINE void backward_c3(const float *dy, const float *img, const float *field, float *dimg,
                        float *d_field, int z, int y, int x, int D, int H, int W,
                        const int border, size_t shift, const int want_img,
                        const int want_field) {
  const size_t plane = (size_t)H * W;
  const axis_t ay = linear_axis((float)y + field[1], H, border);
  const axis_t ax = linear_axis((float)x + field[2], W, border);
  const axis_t az = linear_axis((float)z + field[0], D, border);
  const size_t y0 = (size_t)ay.i0 * W, y1 = (size_t)ay.i1 * W;
  const size_t o00 = (y0 + ax.i0) * 3, o01 = (y0 + ax.i1) * 3;
  const size_t o10 = (y1 + ax.i0) * 3, o11 = (y1 + ax.i1) * 3;
  const size_t s0 = (size_t)az.i0 * plane * 3, s1 = (size_t)az.i1 * plane * 3;
  const float w00 = ay.w0 * ax.w0, w01 = ay.w0 * ax.w1;
  const float w10 = ay.w1 * ax.w0, w11 = ay.w1 * ax.w1;
  const v128_t g = load3(dy);
  if (want_img) {
    float *t0 = dimg + (s0 - shift), *t1 = dimg + (s1 - shift);
    const v128_t g0 = F4(S4(az.w0), g), g1 = F4(S4(az.w1), g);
    add3(t0 + o00, F4(S4(w00), g0));
    add3(t0 + o01, F4(S4(w01), g0));
    add3(t0 + o10, F4(S4(w10), g0));
    add3(t0 + o11, F4(S4(w11), g0));
    add3(t1 + o00, F4(S4(w00), g1));
    add3(t1 + o01, F4(S4(w01), g1));
    add3(t1 + o10, F4(S4(w10), g1));
    add3(t1 + o11, F4(S4(w11), g1));
  }
  if (!want_field) return;
  /* g_k = Σ_c dy_c · m_c at the 8 corners */
  const v128_t G0 = hsum3x4(F4(g, load3(img + s0 + o00)), F4(g, load3(img + s0 + o01)),
                            F4(g, load3(img + s0 + o10)), F4(g, load3(img + s0 + o11)));
  const v128_t G1 = hsum3x4(F4(g, load3(img + s1 + o00)), F4(g, load3(img + s1 + o01)),
                            F4(g, load3(img + s1 + o10)), F4(g, load3(img + s1 + o11)));
  const float g000 = wasm_f32x4_extract_lane(G0, 0), g001 = wasm_f32x4_extract_lane(G0, 1);
  const float g010 = wasm_f32x4_extract_lane(G0, 2), g011 = wasm_f32x4_extract_lane(G0, 3);
  const float g100 = wasm_f32x4_extract_lane(G1, 0), g101 = wasm_f32x4_extract_lane(G1, 1);
  const float g110 = wasm_f32x4_extract_lane(G1, 2), g111 = wasm_f32x4_extract_lane(G1, 3);
  const float a0 = w00 * g000 + w01 * g001 + w10 * g010 + w11 * g011;
  const float a1 = w00 * g100 + w01 * g101 + w10 * g110 + w11 * g111;
  const float ey0 = ay.d0 * (ax.w0 * g000 + ax.w1 * g001) + ay.d1 * (ax.w0 * g010 + ax.w1 * g011);
  const float ey1 = ay.d0 * (ax.w0 * g100 + ax.w1 * g101) + ay.d1 * (ax.w0 * g110 + ax.w1 * g111);
  const float ex0 = ay.w0 * (ax.d0 * g000 + ax.d1 * g001) + ay.w1 * (ax.d0 * g010 + ax.d1 * g011);
  const float ex1 = ay.w0 * (ax.d0 * g100 + ax.d1 * g101) + ay.w1 * (ax.d0 * g110 + ax.d1 * g111);
  d_field[0] = az.d0 * a0 + az.d1 * a1;
  d_field[1] = az.w0 * ey0 + az.w1 * ey1;
  d_field[2] = az.w0 * ex0 + az.w1 * ex1;
}
#undef S4
#endif /* WARP_SIMD */

/* ---------------------------------------------------------------------------------- */
/* forward                                                                             */
/* ---------------------------------------------------------------------------------- */

/*
 * Threads: every exported function takes a work range (output rows of the flattened
 * [B, Do, Ho] grid, or units of an outer axis), so that several threads, each with its
 * own instance of this module on one shared memory and its own stack, compute disjoint
 * parts of one call (src/threads.ts). Rows are independent in the forward pass; the
 * backward pass scatters into dImage, so it runs per fixed chunk of rows into a slab of
 * its own (warp_backward_rows), and the slabs are added in chunk order (warp_reduce):
 * the result does not depend on the number of threads.
 */

INLINE void forward_linear(const float *restrict image, const float *restrict field,
                           float *restrict out, int D, int H, int W, int C, int Do, int Ho,
                           int Wo, const int nd, const int border, const int C1, int r0,
                           int r1) {
  if (C1) C = 1;
  const size_t plane = (size_t)H * W;
  (void)Do;
  field += (size_t)r0 * Wo * nd;
  out += (size_t)r0 * Wo * C;
  for (int r = r0; r < r1; r++) {
    const int b = r / (Do * Ho), z = (r / Ho) % Do, y = r % Ho;
    const float *img = image + (size_t)b * D * plane * C;
    int x = 0;
#if WARP_SIMD
    if (C1 && W >= 2)
      for (; x + 4 <= Wo; x += 4, field += 4 * nd, out += 4)
        forward4(img, field, out, z, y, x, D, H, W, nd, border);
    if (nd == 3 && !C1 && C == 3) {
      for (; x < Wo; x++, field += 3, out += 3)
        forward_c3(img, field, out, z, y, x, D, H, W, border);
      continue;
    }
#endif
    for (; x < Wo; x++, field += nd, out += C) {
      const axis_t ay = linear_axis((float)y + field[nd - 2], H, border);
      const axis_t ax = linear_axis((float)x + field[nd - 1], W, border);
      const size_t y0 = (size_t)ay.i0 * W, y1 = (size_t)ay.i1 * W;
      const float w00 = ay.w0 * ax.w0, w01 = ay.w0 * ax.w1;
      const float w10 = ay.w1 * ax.w0, w11 = ay.w1 * ax.w1;
      if (nd == 2) {
        const float *p00 = img + (y0 + ax.i0) * C, *p01 = img + (y0 + ax.i1) * C;
        const float *p10 = img + (y1 + ax.i0) * C, *p11 = img + (y1 + ax.i1) * C;
        for (int c = 0; c < C; c++)
          out[c] = w00 * p00[c] + w01 * p01[c] + w10 * p10[c] + w11 * p11[c];
      } else {
        const axis_t az = linear_axis((float)z + field[0], D, border);
        const float *s0 = img + (size_t)az.i0 * plane * C;
        const float *s1 = img + (size_t)az.i1 * plane * C;
        const size_t o00 = (y0 + ax.i0) * C, o01 = (y0 + ax.i1) * C;
        const size_t o10 = (y1 + ax.i0) * C, o11 = (y1 + ax.i1) * C;
        for (int c = 0; c < C; c++) {
          const float a =
              w00 * s0[o00 + c] + w01 * s0[o01 + c] + w10 * s0[o10 + c] + w11 * s0[o11 + c];
          const float e =
              w00 * s1[o00 + c] + w01 * s1[o01 + c] + w10 * s1[o10 + c] + w11 * s1[o11 + c];
          out[c] = az.w0 * a + az.w1 * e;
        }
      }
    }
  }
}

INLINE void forward_nearest(const float *restrict image, const float *restrict field,
                            float *restrict out, int D, int H, int W, int C, int Do, int Ho,
                            int Wo, const int nd, const int border, int r0, int r1) {
  const size_t plane = (size_t)H * W;
  field += (size_t)r0 * Wo * nd;
  out += (size_t)r0 * Wo * C;
  for (int r = r0; r < r1; r++) {
    const int b = r / (Do * Ho), z = (r / Ho) % Do, y = r % Ho;
    const float *img = image + (size_t)b * D * plane * C;
    for (int x = 0; x < Wo; x++, field += nd, out += C) {
      const int iz = nd == 3 ? nearest_axis(z, field[0], D, border) : 0;
      const int iy = nearest_axis(y, field[nd - 2], H, border);
      const int ix = nearest_axis(x, field[nd - 1], W, border);
      if ((iz | iy | ix) < 0) {
        for (int c = 0; c < C; c++) out[c] = 0.0f;
      } else {
        const float *src = img + ((size_t)iz * plane + (size_t)iy * W + ix) * C;
        for (int c = 0; c < C; c++) out[c] = src[c];
      }
    }
  }
}

/**
 * out[b, z, y, x, c] = image sampled at (z, y, x) + field[b, z, y, x], for the output rows
 * r0 <= r < r1 of the flattened [B, Do, Ho] grid (all rows: 0, B Do Ho).
 * nd = 2 (then D = Do = 1) or 3; mode = MODE_NEAREST | MODE_BORDER bits.
 */
__attribute__((export_name("warp_forward"))) void warp_forward(
    const float *image, const float *field, float *out, int B, int D, int H, int W, int C,
    int Do, int Ho, int Wo, int nd, int mode, int r0, int r1) {
  (void)B;
  const int border = (mode & MODE_BORDER) != 0;
  if (nd == 2) D = Do = 1;
  if (mode & MODE_NEAREST) {
    if (nd == 2) forward_nearest(image, field, out, 1, H, W, C, 1, Ho, Wo, 2, border, r0, r1);
    else forward_nearest(image, field, out, D, H, W, C, Do, Ho, Wo, 3, border, r0, r1);
    return;
  }
#define FWD(ND, BORDER, C1) \
  forward_linear(image, field, out, D, H, W, C, Do, Ho, Wo, ND, BORDER, C1, r0, r1)
  if (nd == 2) {
    if (C == 1) border ? FWD(2, 1, 1) : FWD(2, 0, 1);
    else border ? FWD(2, 1, 0) : FWD(2, 0, 0);
  } else {
    if (C == 1) border ? FWD(3, 1, 1) : FWD(3, 0, 1);
    else border ? FWD(3, 1, 0) : FWD(3, 0, 0);
  }
#undef FWD
}

/* ---------------------------------------------------------------------------------- */
/* backward                                                                            */
/* ---------------------------------------------------------------------------------- */

/*
 * One batch item, output rows r0 <= r < r1 of [Do, Ho]. dimg is a slab of dImage: the
 * outer units (depth planes in 3D, rows in 2D) lo.. of the image, shift = lo · (unit size)
 * elements; the caller has computed lo with warp_touched, so every write lands in the slab.
 */
INLINE void backward_linear(const float *restrict dy, const float *restrict img,
                            const float *restrict field, float *restrict dimg,
                            float *restrict d_field, int D, int H, int W, int C, int Ho, int Wo,
                            const int nd, const int border, const int C1, int r0, int r1,
                            size_t shift, const int want_img, const int want_field) {
  if (C1) C = 1;
  const size_t plane = (size_t)H * W;
  field += (size_t)r0 * Wo * nd;
  d_field += want_field ? (size_t)r0 * Wo * nd : 0;
  dy += (size_t)r0 * Wo * C;
#if WARP_SIMD
  const v128_t nshift = wasm_i32x4_splat(-(int)shift);
#endif
  for (int r = r0; r < r1; r++) {
    const int z = r / Ho, y = r % Ho;
    int x = 0;
#if WARP_SIMD
    if (C1 && W >= 2)
      for (; x + 4 <= Wo; x += 4, field += 4 * nd, d_field += want_field ? 4 * nd : 0, dy += 4)
        backward4(dy, img, field, dimg, d_field, z, y, x, D, H, W, nd, border, nshift, want_img,
                  want_field);
    if (nd == 3 && !C1 && C == 3) {
      for (; x < Wo; x++, field += 3, d_field += want_field ? 3 : 0, dy += 3)
        backward_c3(dy, img, field, dimg, d_field, z, y, x, D, H, W, border, shift, want_img,
                    want_field);
      continue;
    }
#endif
    for (; x < Wo; x++, field += nd, d_field += want_field ? nd : 0, dy += C) {
      const axis_t ay = linear_axis((float)y + field[nd - 2], H, border);
      const axis_t ax = linear_axis((float)x + field[nd - 1], W, border);
      const size_t y0 = (size_t)ay.i0 * W, y1 = (size_t)ay.i1 * W;
      const size_t o00 = (y0 + ax.i0) * C, o01 = (y0 + ax.i1) * C;
      const size_t o10 = (y1 + ax.i0) * C, o11 = (y1 + ax.i1) * C;
      if (nd == 2) {
        /* g_k = Σ_c dy_c · m_c at corner k */
        float g00 = 0.0f, g01 = 0.0f, g10 = 0.0f, g11 = 0.0f;
        const float w00 = ay.w0 * ax.w0, w01 = ay.w0 * ax.w1;
        const float w10 = ay.w1 * ax.w0, w11 = ay.w1 * ax.w1;
        float *d00 = dimg + (o00 - shift), *d01 = dimg + (o01 - shift);
        float *d10 = dimg + (o10 - shift), *d11 = dimg + (o11 - shift);
        for (int c = 0; c < C; c++) {
          const float g = dy[c];
          if (want_field) {
            g00 += g * img[o00 + c];
            g01 += g * img[o01 + c];
            g10 += g * img[o10 + c];
            g11 += g * img[o11 + c];
          }
          if (want_img) {
            d00[c] += w00 * g;
            d01[c] += w01 * g;
            d10[c] += w10 * g;
            d11[c] += w11 * g;
          }
        }
        if (!want_field) continue;
        d_field[0] = ay.d0 * (ax.w0 * g00 + ax.w1 * g01) + ay.d1 * (ax.w0 * g10 + ax.w1 * g11);
        d_field[1] = ay.w0 * (ax.d0 * g00 + ax.d1 * g01) + ay.w1 * (ax.d0 * g10 + ax.d1 * g11);
      } else {
        const axis_t az = linear_axis((float)z + field[0], D, border);
        const size_t s0 = (size_t)az.i0 * plane * C, s1 = (size_t)az.i1 * plane * C;
        float *t0 = dimg + (s0 - shift), *t1 = dimg + (s1 - shift);
        float g000 = 0.0f, g001 = 0.0f, g010 = 0.0f, g011 = 0.0f;
        float g100 = 0.0f, g101 = 0.0f, g110 = 0.0f, g111 = 0.0f;
        const float w00 = ay.w0 * ax.w0, w01 = ay.w0 * ax.w1;
        const float w10 = ay.w1 * ax.w0, w11 = ay.w1 * ax.w1;
        for (int c = 0; c < C; c++) {
          const float g = dy[c];
          if (want_field) {
            g000 += g * img[s0 + o00 + c];
            g001 += g * img[s0 + o01 + c];
            g010 += g * img[s0 + o10 + c];
            g011 += g * img[s0 + o11 + c];
            g100 += g * img[s1 + o00 + c];
            g101 += g * img[s1 + o01 + c];
            g110 += g * img[s1 + o10 + c];
            g111 += g * img[s1 + o11 + c];
          }
          if (!want_img) continue;
          const float g0 = az.w0 * g, g1 = az.w1 * g;
          t0[o00 + c] += w00 * g0;
          t0[o01 + c] += w01 * g0;
          t0[o10 + c] += w10 * g0;
          t0[o11 + c] += w11 * g0;
          t1[o00 + c] += w00 * g1;
          t1[o01 + c] += w01 * g1;
          t1[o10 + c] += w10 * g1;
          t1[o11 + c] += w11 * g1;
        }
        if (!want_field) continue;
        /* bilinear sums of the corner products over y, x for each z slice, and the
           derivatives of those sums along y and x */
        const float a0 = w00 * g000 + w01 * g001 + w10 * g010 + w11 * g011;
        const float a1 = w00 * g100 + w01 * g101 + w10 * g110 + w11 * g111;
        const float ey0 =
            ay.d0 * (ax.w0 * g000 + ax.w1 * g001) + ay.d1 * (ax.w0 * g010 + ax.w1 * g011);
        const float ey1 =
            ay.d0 * (ax.w0 * g100 + ax.w1 * g101) + ay.d1 * (ax.w0 * g110 + ax.w1 * g111);
        const float ex0 =
            ay.w0 * (ax.d0 * g000 + ax.d1 * g001) + ay.w1 * (ax.d0 * g010 + ax.d1 * g011);
        const float ex1 =
            ay.w0 * (ax.d0 * g100 + ax.d1 * g101) + ay.w1 * (ax.d0 * g110 + ax.d1 * g111);
        d_field[0] = az.d0 * a0 + az.d1 * a1;
        d_field[1] = az.w0 * ey0 + az.w1 * ey1;
        d_field[2] = az.w0 * ex0 + az.w1 * ex1;
      }
    }
  }
}

INLINE void backward_nearest(const float *restrict dy, const float *restrict field,
                             float *restrict dimg, int D, int H, int W, int C, int Ho, int Wo,
                             const int nd, const int border, int r0, int r1, size_t shift) {
  const size_t plane = (size_t)H * W;
  field += (size_t)r0 * Wo * nd;
  dy += (size_t)r0 * Wo * C;
  for (int r = r0; r < r1; r++) {
    const int z = r / Ho, y = r % Ho;
    for (int x = 0; x < Wo; x++, field += nd, dy += C) {
      const int iz = nd == 3 ? nearest_axis(z, field[0], D, border) : 0;
      const int iy = nearest_axis(y, field[nd - 2], H, border);
      const int ix = nearest_axis(x, field[nd - 1], W, border);
      if ((iz | iy | ix) < 0) continue;
      float *dst = dimg + (((size_t)iz * plane + (size_t)iy * W + ix) * C - shift);
      for (int c = 0; c < C; c++) dst[c] += dy[c];
    }
  }
}

/**
 * The outer units of the image (depth planes in 3D, rows in 2D) that the output rows
 * r0 <= r < r1 of one batch item scatter into in warp_backward_rows, for each chunk
 * k0 <= k < k1 of the `chunks` equal parts of the rows: range[2k] = first, range[2k + 1] =
 * last (first > last when none).
 */
__attribute__((export_name("warp_touched"))) void warp_touched(const float *field, int D, int H,
                                                               int Do, int Ho, int Wo, int nd,
                                                               int mode, int chunks, int k0, int k1,
                                                               int *range) {
  const int border = (mode & MODE_BORDER) != 0, nearest = (mode & MODE_NEAREST) != 0;
  const int rows = (nd == 2 ? 1 : Do) * Ho;
  const int size = nd == 3 ? D : H;
  for (int k = k0; k < k1; k++) {
    /* chunk k: rows floor(k rows / chunks) .. floor((k + 1) rows / chunks) (equal sizes) */
    const int r0 = (int)((long long)k * rows / chunks);
    const int r1 = (int)((long long)(k + 1) * rows / chunks);
    int lo = size, hi = -1;
    for (int r = r0; r < r1; r++) {
      const int u = nd == 3 ? r / Ho : r; /* output coordinate along the outer axis */
      const float *f = field + (size_t)r * Wo * nd;
      for (int x = 0; x < Wo; x++, f += nd) {
        if (nearest) {
          const int i = nearest_axis(u, f[0], size, border);
          if (i >= 0) {
            lo = i < lo ? i : lo;
            hi = i > hi ? i : hi;
          }
        } else {
          const axis_t a = linear_axis((float)u + f[0], size, border);
          lo = a.i0 < lo ? a.i0 : lo;
          hi = a.i1 > hi ? a.i1 : hi;
        }
      }
    }
    range[2 * k] = lo;
    range[2 * k + 1] = hi;
  }
}

/**
 * Backward pass of output rows r0 <= r < r1 of one batch item ([Do, Ho] rows; image, dy,
 * field and d_field point at the batch item): d_field rows are written, the image gradient
 * is scattered into the slab `dimg` of the outer units lo..hi (zeroed here first; shift =
 * lo · unit elements, unit = H W C in 3D and W C in 2D). With MODE_NO_IMAGE only d_field is
 * written (dimg unused: pass lo > hi); with MODE_NO_FIELD only the slab (d_field and image
 * unused).
 */
__attribute__((export_name("warp_backward_rows"))) void warp_backward_rows(
    const float *dy, const float *image, const float *field, float *dimg, float *d_field, int D,
    int H, int W, int C, int Do, int Ho, int Wo, int nd, int mode, int r0, int r1, int lo,
    int hi) {
  (void)Do;
  const int border = (mode & MODE_BORDER) != 0;
  if (nd == 2) D = 1;
  const size_t unit = (nd == 3 ? (size_t)H * W : (size_t)W) * C;
  if (hi >= lo) zero(dimg, (size_t)(hi - lo + 1) * unit);
  const size_t shift = (size_t)(hi >= lo ? lo : 0) * unit;
  const int want_img = !(mode & MODE_NO_IMAGE), want_field = !(mode & MODE_NO_FIELD);
  if (mode & MODE_NEAREST) {
    if (want_field) zero(d_field + (size_t)r0 * Wo * nd, (size_t)(r1 - r0) * Wo * nd);
    if (!want_img) return;
    if (nd == 2) backward_nearest(dy, field, dimg, 1, H, W, C, Ho, Wo, 2, border, r0, r1, shift);
    else backward_nearest(dy, field, dimg, D, H, W, C, Ho, Wo, 3, border, r0, r1, shift);
    return;
  }
#define BWD(ND, BORDER, C1)                                                                  \
  backward_linear(dy, image, field, dimg, d_field, D, H, W, C, Ho, Wo, ND, BORDER, C1, r0, r1, \
                  shift, want_img, want_field)
  if (nd == 2) {
    if (C == 1) border ? BWD(2, 1, 1) : BWD(2, 0, 1);
    else border ? BWD(2, 1, 0) : BWD(2, 0, 0);
  } else {
    if (C == 1) border ? BWD(3, 1, 1) : BWD(3, 0, 1);
    else border ? BWD(3, 1, 0) : BWD(3, 0, 0);
  }
#undef BWD
}

/**
 * acc[u] += slab_j[u - lo_j] for the outer units u0 <= u < u1 (of `unit` floats each) and
 * the slabs j = 0 .. count - 1 in this order, where slab j covers lo_j <= u <= hi_j
 * (slabs: count byte offsets; range: count (lo, hi) pairs, as written by warp_touched).
 */
__attribute__((export_name("warp_reduce"))) void warp_reduce(float *acc, int unit, int u0, int u1,
                                                             int count, const int *slabs,
                                                             const int *range) {
  for (int u = u0; u < u1; u++) {
    float *dst = acc + (size_t)u * unit;
    for (int j = 0; j < count; j++) {
      const int lo = range[2 * j], hi = range[2 * j + 1];
      if (u < lo || u > hi) continue;
      const float *src = (const float *)(size_t)slabs[j] + (size_t)(u - lo) * unit;
      for (int q = 0; q < unit; q++) dst[q] += src[q];
    }
  }
}

/** Sets n floats at p to 0. */
__attribute__((export_name("zero_f32"))) void zero_f32(float *p, int n) { zero(p, (size_t)n); }

/* ---------------------------------------------------------------------------------- */
/*
 * One pass of separable linear resizing with aligned corners (@regkit/core's
 * RegkitResizeLinear, packages/core/src/resize_kernel_js.ts): along the middle axis of
 * src [outer, n, inner] to dst [outer, m, inner], output i sampling the input at
 * p = i (n - 1)/(m - 1) (0 when n or m is 1): dst = (1 - t) src[j] + t src[j + 1] with
 * j = min(floor(p), n - 2), t = p - j. The adjoint (adjoint != 0) takes src [outer, m, inner]
 * and writes dst [outer, n, inner] (fully: it is zeroed first). Taps are computed in double
 * precision, weights applied in float32.
 */
INLINE void resize_taps(int i, double r, int n, int *j0, int *j1, float *t) {
  const double p = i * r;
  int j = (int)p;
  if (j > n - 2) j = n - 2 < 0 ? 0 : n - 2;
  *j0 = j;
  *j1 = j + 1 < n ? j + 1 : n - 1;
  *t = n > 1 ? (float)(p - j) : 0.0f;
}

__attribute__((export_name("resize_axis"))) void resize_axis(const float *src, float *dst,
                                                             int outer, int n, int m,
                                                             int inner, int adjoint, int o0,
                                                             int o1, int q0, int q1) {
  /* work range: outer indices o0 <= o < o1 and inner indices q0 <= q < q1 (threads split
     one of the two; every output value is computed by one thread in a fixed order) */
  (void)outer;
  const double r = n > 1 && m > 1 ? (double)(n - 1) / (double)(m - 1) : 0.0;
  const int len = q1 - q0;
  for (int o = o0; o < o1; o++) {
    if (adjoint)
      for (int j = 0; j < n; j++) zero(dst + ((size_t)o * n + j) * inner + q0, (size_t)len);
    for (int i = 0; i < m; i++) {
      int j0, j1;
      float w1;
      resize_taps(i, r, n, &j0, &j1, &w1);
      const float w0 = 1.0f - w1;
      const size_t a = ((size_t)o * n + j0) * inner + q0;
      const size_t b = ((size_t)o * n + j1) * inner + q0;
      const size_t d = ((size_t)o * m + i) * inner + q0;
      if (adjoint) {
        const float *g = src + d;
        float *pa = dst + a, *pb = dst + b;
        for (int q = 0; q < len; q++) {
          const float v = g[q];
          pa[q] += w0 * v;
          pb[q] += w1 * v;
        }
      } else {
        const float *pa = src + a, *pb = src + b;
        float *out = dst + d;
        for (int q = 0; q < len; q++) out[q] = w0 * pa[q] + w1 * pb[q];
      }
    }
  }
}
