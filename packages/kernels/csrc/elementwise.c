/*
 * LeakyReLU and its gradient, and max pooling and its gradient (the layers of the U-Nets):
 * WebAssembly SIMD, branchless (selects instead of branches on the data, which real
 * activations mispredict half the time), freestanding; threads take element or row ranges.
 */
#include <stddef.h>
#include <wasm_simd128.h>

/** y[i] = x[i] > 0 ? x[i] : alpha * x[i], i in [i0, i1) (tfjs's LeakyRelu, float32). */
__attribute__((export_name("leaky_relu"))) void leaky_relu(const float *x, float *y, float alpha,
                                                           int i0, int i1) {
  const v128_t va = wasm_f32x4_splat(alpha), zero = wasm_f32x4_splat(0.0f);
  int i = i0;
  for (; i + 4 <= i1; i += 4) {
    const v128_t v = wasm_v128_load(x + i);
    wasm_v128_store(y + i, wasm_v128_bitselect(v, wasm_f32x4_mul(v, va), wasm_f32x4_gt(v, zero)));
  }
  for (; i < i1; i++) y[i] = x[i] > 0.0f ? x[i] : alpha * x[i];
}

/**
 * dx[i] = x[i] > 0 ? dy[i] : alpha * dy[i], i in [i0, i1): tfjs's gradient of LeakyRelu,
 * select(x > 0, dy, alpha * dy), in one pass.
 */
__attribute__((export_name("leaky_relu_grad"))) void leaky_relu_grad(const float *dy,
                                                                     const float *x, float *dx,
                                                                     float alpha, int i0,
                                                                     int i1) {
  const v128_t va = wasm_f32x4_splat(alpha), zero = wasm_f32x4_splat(0.0f);
  int i = i0;
  for (; i + 4 <= i1; i += 4) {
    const v128_t g = wasm_v128_load(dy + i);
    const v128_t m = wasm_f32x4_gt(wasm_v128_load(x + i), zero);
    wasm_v128_store(dx + i, wasm_v128_bitselect(g, wasm_f32x4_mul(g, va), m));
  }
  for (; i < i1; i++) dx[i] = x[i] > 0.0f ? dy[i] : alpha * dy[i];
}

/*
 * Max pooling of whole windows (window = stride = s along H and W, sd along D: s in 3D, 1 in
 * 2D) of x [B, D, H, W, C] whose sizes are multiples of the window, and its gradient. A window
 * keeps its first maximum in raster order, a NaN (the last one) taking over from any number:
 * the rule of core's RegkitMaxPool (PyTorch's). Output rows (b, oz, oy) are split over the
 * threads; the windows do not overlap, so every dx value is written once, by one thread.
 */

/** The index (0 .. sd*s*s - 1) of each lane's kept value in the window at x + base. */
static inline v128_t window_argmax(const float *x, size_t base, size_t sz, size_t sy, size_t sx,
                                   int sd, int s, v128_t *best_out) {
  v128_t best = wasm_v128_load(x + base), idx = wasm_i32x4_splat(0);
  int w = 0;
  for (int kz = 0; kz < sd; kz++)
    for (int ky = 0; ky < s; ky++)
      for (int kx = 0; kx < s; kx++, w++) {
        if (w == 0) continue;
        const v128_t v = wasm_v128_load(x + base + kz * sz + ky * sy + kx * sx);
        const v128_t take = wasm_v128_or(wasm_f32x4_gt(v, best), wasm_f32x4_ne(v, v));
        best = wasm_v128_bitselect(v, best, take);
        idx = wasm_v128_bitselect(wasm_i32x4_splat(w), idx, take);
      }
  *best_out = best;
  return idx;
}

/** Scalar version of window_argmax for one channel. */
static inline int window_argmax1(const float *x, size_t base, size_t sz, size_t sy, size_t sx,
                                 int sd, int s, float *best_out) {
  float best = x[base];
  int idx = 0, w = 0;
  for (int kz = 0; kz < sd; kz++)
    for (int ky = 0; ky < s; ky++)
      for (int kx = 0; kx < s; kx++, w++) {
        if (w == 0) continue;
        const float v = x[base + kz * sz + ky * sy + kx * sx];
        if (v > best || v != v) {
          best = v;
          idx = w;
        }
      }
  *best_out = best;
  return idx;
}

/** y [B, D/sd, H/s, W/s, C] = the window maxima of x, output rows [r0, r1). */
__attribute__((export_name("max_pool"))) void max_pool(const float *x, float *y, int D, int H,
                                                       int W, int C, int sd, int s, int r0,
                                                       int r1) {
  const int Do = D / sd, Ho = H / s, Wo = W / s;
  const size_t sx = (size_t)C, sy = (size_t)W * C, sz = (size_t)H * W * C;
  for (int r = r0; r < r1; r++) {
    const int oy = r % Ho, oz = (r / Ho) % Do, b = r / (Ho * Do);
    const size_t row = (((size_t)b * D + (size_t)oz * sd) * H + (size_t)oy * s) * W * C;
    float *out = y + (size_t)r * Wo * C;
    for (int ox = 0; ox < Wo; ox++) {
      const size_t base = row + (size_t)ox * s * C;
      int c = 0;
      for (; c + 4 <= C; c += 4) {
        v128_t best;
        window_argmax(x, base + c, sz, sy, sx, sd, s, &best);
        wasm_v128_store(out + (size_t)ox * C + c, best);
      }
      for (; c < C; c++) window_argmax1(x, base + c, sz, sy, sx, sd, s, out + (size_t)ox * C + c);
    }
  }
}

/** dx [B, D, H, W, C]: dy at each window's kept value, 0 elsewhere; output rows [r0, r1). */
__attribute__((export_name("max_pool_grad"))) void max_pool_grad(const float *dy, const float *x,
                                                                 float *dx, int D, int H, int W,
                                                                 int C, int sd, int s, int r0,
                                                                 int r1) {
  const int Do = D / sd, Ho = H / s, Wo = W / s;
  const size_t sx = (size_t)C, sy = (size_t)W * C, sz = (size_t)H * W * C;
  const v128_t zero = wasm_f32x4_splat(0.0f);
  for (int r = r0; r < r1; r++) {
    const int oy = r % Ho, oz = (r / Ho) % Do, b = r / (Ho * Do);
    const size_t row = (((size_t)b * D + (size_t)oz * sd) * H + (size_t)oy * s) * W * C;
    const float *g = dy + (size_t)r * Wo * C;
    for (int ox = 0; ox < Wo; ox++) {
      const size_t base = row + (size_t)ox * s * C;
      int c = 0;
      for (; c + 4 <= C; c += 4) {
        v128_t best;
        const v128_t idx = window_argmax(x, base + c, sz, sy, sx, sd, s, &best);
        const v128_t gv = wasm_v128_load(g + (size_t)ox * C + c);
        int w = 0;
        for (int kz = 0; kz < sd; kz++)
          for (int ky = 0; ky < s; ky++)
            for (int kx = 0; kx < s; kx++, w++) {
              const v128_t hit = wasm_i32x4_eq(idx, wasm_i32x4_splat(w));
              wasm_v128_store(dx + base + c + kz * sz + ky * sy + kx * sx,
                              wasm_v128_bitselect(gv, zero, hit));
            }
      }
      for (; c < C; c++) {
        float best;
        const int k = window_argmax1(x, base + c, sz, sy, sx, sd, s, &best);
        int w = 0;
        for (int kz = 0; kz < sd; kz++)
          for (int ky = 0; ky < s; ky++)
            for (int kx = 0; kx < s; kx++, w++)
              dx[base + c + kz * sz + ky * sy + kx * sx] = w == k ? g[(size_t)ox * C + c] : 0.0f;
      }
    }
  }
}

/*
 * Sums over the leading axes (the bias gradient of a channels-last layer): x [R, C] → [C].
 * The rows are cut into fixed chunks of `rows` rows (from the shape alone), each summed in
 * float32 into a partial of its own; the partials are added in chunk order in double. Any
 * thread count gives the same bits.
 */

/** partials[k, :] = the float32 sum of the rows of chunk k, chunks [k0, k1). */
__attribute__((export_name("sum_rows_chunks"))) void sum_rows_chunks(const float *x, int R, int C,
                                                                     int rows, float *partials,
                                                                     int k0, int k1) {
  for (int k = k0; k < k1; k++) {
    float *p = partials + (size_t)k * C;
    for (int c = 0; c < C; c++) p[c] = 0.0f;
    const int r1 = (k + 1) * rows < R ? (k + 1) * rows : R;
    for (int r = k * rows; r < r1; r++) {
      const float *row = x + (size_t)r * C;
      int c = 0;
      for (; c + 4 <= C; c += 4)
        wasm_v128_store(p + c, wasm_f32x4_add(wasm_v128_load(p + c), wasm_v128_load(row + c)));
      for (; c < C; c++) p[c] += row[c];
    }
  }
}

/** out[c] = the sum over the chunks (in order, in double) of partials[k, c], c in [c0, c1). */
__attribute__((export_name("sum_rows_finish"))) void sum_rows_finish(const float *partials,
                                                                     int chunks, int C, float *out,
                                                                     int c0, int c1) {
  for (int c = c0; c < c1; c++) {
    double s = 0.0;
    for (int k = 0; k < chunks; k++) s += partials[(size_t)k * C + c];
    out[c] = (float)s;
  }
}

/*
 * Concatenation along the last axis and its inverse (the split of concat's gradient): `table`
 * holds n pairs (byte offset of part i [R, C_i], C_i); `whole` is [R, sum C_i]. to_whole = 1
 * gathers the parts into whole, 0 scatters whole into the parts; rows [r0, r1).
 */
__attribute__((export_name("concat_rows"))) void concat_rows(const int *table, int n, float *whole,
                                                             int to_whole, int r0, int r1) {
  int total = 0;
  for (int i = 0; i < n; i++) total += table[2 * i + 1];
  for (int r = r0; r < r1; r++) {
    float *w = whole + (size_t)r * total;
    for (int i = 0; i < n; i++) {
      const int c = table[2 * i + 1];
      float *part = (float *)(size_t)table[2 * i] + (size_t)r * c;
      if (to_whole)
        __builtin_memcpy(w, part, (size_t)c * sizeof(float));
      else
        __builtin_memcpy(part, w, (size_t)c * sizeof(float));
      w += c;
    }
  }
}

/*
 * Nearest upsampling by an integer factor (f along H and W, fd along D: f in 3D, 1 in 2D) of
 * x [B, D, H, W, C], and its adjoint (block sums). The adjoint adds a block's values in raster
 * order (kz, ky, kx) in float32 from 0, as core's JavaScript kernel: the same bits.
 */

/** y [B, D·fd, H·f, W·f, C], output rows (b, oz, oy) [r0, r1). */
__attribute__((export_name("upsample_nearest"))) void upsample_nearest(const float *x, float *y,
                                                                       int D, int H, int W, int C,
                                                                       int fd, int f, int r0,
                                                                       int r1) {
  const int Do = D * fd, Ho = H * f, Wo = W * f;
  const size_t bytes = (size_t)C * sizeof(float);
  for (int r = r0; r < r1; r++) {
    const int oy = r % Ho, oz = (r / Ho) % Do, b = r / (Ho * Do);
    const float *src = x + (((size_t)b * D + oz / fd) * H + oy / f) * (size_t)W * C;
    float *out = y + (size_t)r * Wo * C;
    for (int ix = 0; ix < W; ix++)
      for (int kx = 0; kx < f; kx++)
        __builtin_memcpy(out + ((size_t)ix * f + kx) * C, src + (size_t)ix * C, bytes);
  }
}

/** dx [B, D, H, W, C] = the block sums of dy [B, D·fd, H·f, W·f, C], input rows [r0, r1). */
__attribute__((export_name("upsample_nearest_grad"))) void upsample_nearest_grad(
    const float *dy, float *dx, int D, int H, int W, int C, int fd, int f, int r0, int r1) {
  const int Do = D * fd, Ho = H * f, Wo = W * f;
  for (int r = r0; r < r1; r++) {
    const int iy = r % H, iz = (r / H) % D, b = r / (H * D);
    float *out = dx + (size_t)r * W * C;
    for (int ix = 0; ix < W; ix++) {
      int c = 0;
      for (; c + 4 <= C; c += 4) {
        v128_t acc = wasm_f32x4_splat(0.0f);
        for (int kz = 0; kz < fd; kz++)
          for (int ky = 0; ky < f; ky++) {
            const float *g = dy + ((((size_t)b * Do + (size_t)iz * fd + kz) * Ho +
                                    (size_t)iy * f + ky) * Wo + (size_t)ix * f) * C + c;
            for (int kx = 0; kx < f; kx++)
              acc = wasm_f32x4_add(acc, wasm_v128_load(g + (size_t)kx * C));
          }
        wasm_v128_store(out + (size_t)ix * C + c, acc);
      }
      for (; c < C; c++) {
        float acc = 0.0f;
        for (int kz = 0; kz < fd; kz++)
          for (int ky = 0; ky < f; ky++) {
            const float *g = dy + ((((size_t)b * Do + (size_t)iz * fd + kz) * Ho +
                                    (size_t)iy * f + ky) * Wo + (size_t)ix * f) * C + c;
            for (int kx = 0; kx < f; kx++) acc += g[(size_t)kx * C];
          }
        out[(size_t)ix * C + c] = acc;
      }
    }
  }
}
