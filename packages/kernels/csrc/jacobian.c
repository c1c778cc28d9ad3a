/*
 * regkit Jacobian determinant kernels: det(I + ∇u) of a displacement field and its gradient,
 * float32, freestanding C compiled to WebAssembly (scripts/build-wasm.sh, linked into
 * warp.wasm and run on its worker threads).
 *
 * Layout: u [B, D, H, W, nd] (2D: D = 1, nd = 2, spatial axes (H, W)), component i along
 * spatial axis i. Differences as numpy.gradient (edge_order=1) and core's
 * `jacobianDeterminant`: along spatial axis j at position p of N (N >= 2),
 *   ∂u/∂x_j = s_j(p) (u[hi_j(p)] - u[lo_j(p)]),  lo = max(p - 1, 0), hi = min(p + 1, N - 1),
 *   s_j(p) = 1/2 inside and 1 at the borders,
 * and m_ij = δij + ∂u_i/∂x_j, det = det(m) expanded along the first row.
 *
 * Gradient (dy [B, D, H, W] → du, same shape as u): with cofactors c_ij = ∂det/∂m_ij and
 * g_ij(v) = dy(v) c_ij(v) s_j(v) (jacobian_cofactors), every voxel w gathers what the
 * differences of its neighbours along each axis took from it (jacobian_gather):
 *   du_i(w) = Σ_j [p_j ≥ 1] g_ij(w - e_j) + [p_j = N_j - 1] g_ij(w)
 *               - [p_j ≤ N_j - 2] g_ij(w + e_j) - [p_j = 0] g_ij(w).
 * Every output value is computed by one thread in a fixed order: any split of the rows
 * gives the same bits. Work units are rows (b, z, y) of W voxels.
 */

typedef __SIZE_TYPE__ size_t;

#define INLINE static inline __attribute__((always_inline))

/* Offsets (in voxels) to the low and high neighbour and the scale along one axis. */
INLINE void axis_nb(int p, int N, int stride, int *lo, int *hi, float *s) {
  *lo = p > 0 ? -stride : 0;
  *hi = p < N - 1 ? stride : 0;
  *s = (p > 0 && p < N - 1) ? 0.5f : 1.0f;
}

/* m (row-major, nd x nd) of voxel v, given neighbour offsets and scales per axis. */
INLINE void jac_matrix(const float *u, size_t v, int nd, const int *lo, const int *hi,
                       const float *s, float *m) {
  for (int j = 0; j < nd; j++) {
    const float *a = u + (v + hi[j]) * nd;
    const float *b = u + (v + lo[j]) * nd;
    for (int i = 0; i < nd; i++) m[i * nd + j] = (a[i] - b[i]) * s[j] + (i == j ? 1.0f : 0.0f);
  }
}

INLINE float det3(const float *m) {
  return m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) +
         m[2] * (m[3] * m[7] - m[4] * m[6]);
}

/* Row r of [B * D * H) → its first voxel and its (z, y). */
INLINE size_t row_of(int r, int D, int H, int W, int *z, int *y) {
  *y = r % H;
  *z = (r / H) % D;
  return (size_t)r * W;
}

/** det [B, D, H, W] of the rows [r0, r1) (r = (b * D + z) * H + y). */
__attribute__((export_name("jacobian_det"))) void jacobian_det(const float *u, float *det,
                                                               int D, int H, int W, int nd,
                                                               int r0, int r1) {
  float m[9];
  int lo[3], hi[3];
  float s[3];
  for (int r = r0; r < r1; r++) {
    int z, y;
    const size_t v0 = row_of(r, D, H, W, &z, &y);
    if (nd == 3) {
      axis_nb(z, D, H * W, &lo[0], &hi[0], &s[0]);
      axis_nb(y, H, W, &lo[1], &hi[1], &s[1]);
    } else {
      axis_nb(y, H, W, &lo[0], &hi[0], &s[0]);
    }
    for (int x = 0; x < W; x++) {
      axis_nb(x, W, 1, &lo[nd - 1], &hi[nd - 1], &s[nd - 1]);
      jac_matrix(u, v0 + x, nd, lo, hi, s, m);
      det[v0 + x] = nd == 3 ? det3(m) : m[0] * m[3] - m[1] * m[2];
    }
  }
}

/** g [B, D, H, W, nd, nd] = dy · cofactor(m) · s_j of the rows [r0, r1). */
__attribute__((export_name("jacobian_cofactors"))) void jacobian_cofactors(
    const float *u, const float *dy, float *g, int D, int H, int W, int nd, int r0, int r1) {
  float m[9];
  int lo[3], hi[3];
  float s[3];
  const int nn = nd * nd;
  for (int r = r0; r < r1; r++) {
    int z, y;
    const size_t v0 = row_of(r, D, H, W, &z, &y);
    if (nd == 3) {
      axis_nb(z, D, H * W, &lo[0], &hi[0], &s[0]);
      axis_nb(y, H, W, &lo[1], &hi[1], &s[1]);
    } else {
      axis_nb(y, H, W, &lo[0], &hi[0], &s[0]);
    }
    for (int x = 0; x < W; x++) {
      axis_nb(x, W, 1, &lo[nd - 1], &hi[nd - 1], &s[nd - 1]);
      const size_t v = v0 + x;
      jac_matrix(u, v, nd, lo, hi, s, m);
      const float d = dy[v];
      float *o = g + v * nn;
      if (nd == 3) {
        const float c[9] = {
            m[4] * m[8] - m[5] * m[7],    -(m[3] * m[8] - m[5] * m[6]), m[3] * m[7] - m[4] * m[6],
            -(m[1] * m[8] - m[2] * m[7]), m[0] * m[8] - m[2] * m[6],    -(m[0] * m[7] - m[1] * m[6]),
            m[1] * m[5] - m[2] * m[4],    -(m[0] * m[5] - m[2] * m[3]), m[0] * m[4] - m[1] * m[3],
        };
        for (int i = 0; i < 3; i++)
          for (int j = 0; j < 3; j++) o[i * 3 + j] = d * c[i * 3 + j] * s[j];
      } else {
        o[0] = d * m[3] * s[0];
        o[1] = d * -m[2] * s[1];
        o[2] = d * -m[1] * s[0];
        o[3] = d * m[0] * s[1];
      }
    }
  }
}

/** du [B, D, H, W, nd] of the rows [r0, r1), gathered from g (jacobian_cofactors). */
__attribute__((export_name("jacobian_gather"))) void jacobian_gather(const float *g, float *du,
                                                                     int D, int H, int W,
                                                                     int nd, int r0, int r1) {
  const int nn = nd * nd;
  int N[3], stride[3], p[3];
  if (nd == 3) {
    N[0] = D, N[1] = H, N[2] = W;
    stride[0] = H * W, stride[1] = W, stride[2] = 1;
  } else {
    N[0] = H, N[1] = W;
    stride[0] = W, stride[1] = 1;
  }
  for (int r = r0; r < r1; r++) {
    int z, y;
    const size_t v0 = row_of(r, D, H, W, &z, &y);
    if (nd == 3) {
      p[0] = z, p[1] = y;
    } else {
      p[0] = y;
    }
    for (int x = 0; x < W; x++) {
      p[nd - 1] = x;
      const size_t w = v0 + x;
      float acc[3] = {0.0f, 0.0f, 0.0f};
      for (int j = 0; j < nd; j++) {
        const float *here = g + w * nn + j;
        const float *below = p[j] >= 1 ? g + (w - stride[j]) * nn + j : 0;
        const float *above = p[j] <= N[j] - 2 ? g + (w + stride[j]) * nn + j : 0;
        for (int i = 0; i < nd; i++) {
          float t = acc[i];
          if (below) t += below[i * nd];
          if (p[j] == N[j] - 1) t += here[i * nd];
          if (above) t -= above[i * nd];
          if (p[j] == 0) t -= here[i * nd];
          acc[i] = t;
        }
      }
      for (int i = 0; i < nd; i++) du[w * nd + i] = acc[i];
    }
  }
}
