/*
 * Peak multiply-add throughput of WebAssembly SIMD (f32x4.mul + f32x4.add: there is no fused
 * multiply-add in WebAssembly SIMD without the relaxed-SIMD proposal) in this JavaScript
 * engine, with the register blocking of a convolution inner loop: two inputs splatted from
 * memory times four weight vectors into eight accumulators. Run by bench/simd_peak.mjs.
 */
#include <wasm_simd128.h>
/* n iterations: 2 splatted inputs from memory x 4 weight vectors into 8 accumulators: 32 multiply-adds */
__attribute__((export_name("peak"))) float peak(const float *x, int n, int m) {
  v128_t w0 = wasm_f32x4_splat(0.1f), w1 = wasm_f32x4_splat(0.2f), w2 = wasm_f32x4_splat(0.3f), w3 = wasm_f32x4_splat(0.4f);
  v128_t c0 = w0, c1 = w0, c2 = w0, c3 = w0, c4 = w0, c5 = w0, c6 = w0, c7 = w0;
  for (int i = 0; i < n; i++) {
    const int k = (2 * i) & m;
    const v128_t a = wasm_f32x4_splat(x[k]), b = wasm_f32x4_splat(x[k + 1]);
    c0 = wasm_f32x4_add(c0, wasm_f32x4_mul(a, w0)); c1 = wasm_f32x4_add(c1, wasm_f32x4_mul(a, w1));
    c2 = wasm_f32x4_add(c2, wasm_f32x4_mul(a, w2)); c3 = wasm_f32x4_add(c3, wasm_f32x4_mul(a, w3));
    c4 = wasm_f32x4_add(c4, wasm_f32x4_mul(b, w0)); c5 = wasm_f32x4_add(c5, wasm_f32x4_mul(b, w1));
    c6 = wasm_f32x4_add(c6, wasm_f32x4_mul(b, w2)); c7 = wasm_f32x4_add(c7, wasm_f32x4_mul(b, w3));
  }
  v128_t t = wasm_f32x4_add(wasm_f32x4_add(wasm_f32x4_add(c0, c1), wasm_f32x4_add(c2, c3)), wasm_f32x4_add(wasm_f32x4_add(c4, c5), wasm_f32x4_add(c6, c7)));
  return wasm_f32x4_extract_lane(t, 0);
}
