/*
 * exp(x) for float32 without libm (freestanding WebAssembly), shared by mind.c and
 * parzen.c: x = k ln2 + r with k = round(x / ln2), |r| <= ln2 / 2 (ln2 split in two
 * parts, Cody-Waite), exp(r) by its degree-7 Taylor polynomial (truncation error
 * < 0.347^8 / 8! = 5e-9 relative, below float32's 6e-8), times 2^k built from the
 * exponent bits. Inputs below -87.33 (where 2^k would leave the normal range) give 0;
 * inputs above 88 are not supported (the callers only pass x <= 0).
 */
#ifndef REGKIT_FAST_EXP_H
#define REGKIT_FAST_EXP_H

#include <wasm_simd128.h>

#define FEXP_LO -87.33654f
#define FEXP_LOG2E 1.44269504088896341f
#define FEXP_LN2_HI 0.693145751953125f
#define FEXP_LN2_LO 1.42860682030941723212e-6f

/** exp of 4 lanes (x <= 88; x < -87.33 gives 0). */
static inline __attribute__((always_inline)) v128_t fexp4(v128_t x) {
  const v128_t lo = wasm_f32x4_splat(FEXP_LO);
  const v128_t xc = wasm_f32x4_pmax(x, lo);
  const v128_t k = wasm_f32x4_nearest(wasm_f32x4_mul(xc, wasm_f32x4_splat(FEXP_LOG2E)));
  v128_t r = wasm_f32x4_sub(xc, wasm_f32x4_mul(k, wasm_f32x4_splat(FEXP_LN2_HI)));
  r = wasm_f32x4_sub(r, wasm_f32x4_mul(k, wasm_f32x4_splat(FEXP_LN2_LO)));
  v128_t p = wasm_f32x4_splat(1.0f / 5040.0f);
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.0f / 720.0f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.0f / 120.0f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.0f / 24.0f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.0f / 6.0f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(0.5f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.0f));
  p = wasm_f32x4_add(wasm_f32x4_mul(p, r), wasm_f32x4_splat(1.0f));
  const v128_t ki = wasm_i32x4_trunc_sat_f32x4(k);
  const v128_t scale = wasm_i32x4_shl(wasm_i32x4_add(ki, wasm_i32x4_splat(127)), 23);
  const v128_t y = wasm_f32x4_mul(p, scale);
  return wasm_v128_andnot(y, wasm_f32x4_lt(x, lo));
}

/** exp of one float (same algorithm and result as one lane of fexp4). */
static inline __attribute__((always_inline)) float fexp1(float x) {
  return wasm_f32x4_extract_lane(fexp4(wasm_f32x4_splat(x)), 0);
}

#endif
