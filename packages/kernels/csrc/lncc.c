/*
 * regkit fused local NCC (@regkit/core's RegkitLocalNcc contract; the plain-JavaScript
 * version and the derivation are in packages/losses/src/lncc_kernel.ts): the loss
 * -mean(cc) of a and b and, optionally, its gradients, in one streaming pass over the
 * depth slices with zero-padded box sums. Freestanding C compiled to WebAssembly with SIMD
 * (scripts/build-wasm.sh, linked into warp.wasm); all sums are double precision.
 *
 * With box sums S_a, S_b, S_aa, S_bb, S_ab over a window of n voxels:
 *   X = S_ab - S_a S_b / n, V_a = S_aa - S_a^2 / n, V_b = S_bb - S_b^2 / n,
 *   cc = X^2 / (V_a V_b + eps),
 * and with g = -1/(number of elements) and B() the box sum (self-adjoint):
 *   da = g (B(dcc/dS_a) + 2a B(beta) + b B(alpha)), db likewise.
 * Per batch item and depth slice z: running depth sums of [a, b, a^2, b^2, ab] (add slice
 * z + rD, drop z - rD - 1), then running sums along H and W row by row. For the gradient,
 * slice z's five coefficient maps go into a ring of the last 2 rD + 1 slices and into their
 * running depth sum; slice z - rD's gradient rows follow from that sum's H and W sums.
 *
 * Layout: a, b, da, db [B, D, H, W, C] (2D: D = 1). Work memory: see lncc().
 */

typedef __SIZE_TYPE__ size_t;

#define MAPS 5
#define EPS 1e-5

/** Depth step of [a, b, a^2, b^2, ab] into the first n elements of each plane of acc [5, P]: + slice `add`, - slice `sub` (-1: none); `set`: acc = slice add. */
static void depth_step(double *acc, const float *a, const float *b, long add, long sub, size_t P,
                       size_t n, int set) {
  double *A0 = acc, *A1 = acc + P, *A2 = acc + 2 * P, *A3 = acc + 3 * P, *A4 = acc + 4 * P;
  if (set) {
    const float *x = a + add, *y = b + add;
    for (size_t j = 0; j < n; j++) {
      const double u = x[j], v = y[j];
      A0[j] = u;
      A1[j] = v;
      A2[j] = u * u;
      A3[j] = v * v;
      A4[j] = u * v;
    }
  } else if (add >= 0 && sub >= 0) {
    const float *x = a + add, *y = b + add, *p = a + sub, *q = b + sub;
    for (size_t j = 0; j < n; j++) {
      const double u = x[j], v = y[j], s = p[j], t = q[j];
      A0[j] += u - s;
      A1[j] += v - t;
      A2[j] += u * u - s * s;
      A3[j] += v * v - t * t;
      A4[j] += u * v - s * t;
    }
  } else if (add >= 0 || sub >= 0) {
    const double sign = add >= 0 ? 1.0 : -1.0;
    const long k = add >= 0 ? add : sub;
    const float *x = a + k, *y = b + k;
    for (size_t j = 0; j < n; j++) {
      const double u = x[j], v = y[j];
      A0[j] += sign * u;
      A1[j] += sign * v;
      A2[j] += sign * (u * u);
      A3[j] += sign * (v * v);
      A4[j] += sign * (u * v);
    }
  }
}

/** depth_step on the elements [e0, e0 + n) of each of the 5 planes (a thread's rows). */
static void depth_step_rows(double *acc, const float *a, const float *b, long add, long sub,
                            size_t P, int set, size_t e0, size_t n) {
  /* the planes of acc stay P apart: shift the views, step n elements */
  depth_step(acc + e0, a + e0, b + e0, add, sub, P, n, set);
}

/** hrow [5, WC] += sign * row at element q of each of the 5 planes [P] of src. */
static void add_row(const double *src, double *hrow, size_t q, size_t WC, size_t P, double sign) {
  for (int m = 0; m < MAPS; m++) {
    const double *s = src + m * P + q;
    double *h = hrow + m * WC;
    for (size_t j = 0; j < WC; j++) h[j] += sign * s[j];
  }
}

/** Box sums along H (radius rH) of row h of the 5 planes [H, WC] of src into hrow (holding row h - 1's when h > 0). */
static void h_step(const double *src, double *hrow, int h, int H, size_t WC, int rH) {
  const size_t P = (size_t)H * WC;
  if (rH == 0 || h == 0) {
    for (int m = 0; m < MAPS; m++) {
      const double *s = src + m * P + (size_t)h * WC;
      double *o = hrow + m * WC;
      for (size_t j = 0; j < WC; j++) o[j] = s[j];
    }
    const int last = h + rH < H - 1 ? h + rH : H - 1;
    for (int k = h + 1; k <= last; k++) add_row(src, hrow, (size_t)k * WC, WC, P, 1.0);
    return;
  }
  const int add = h + rH < H ? h + rH : -1;
  const int sub = h - rH - 1;
  if (add >= 0 && sub >= 0) {
    for (int m = 0; m < MAPS; m++) {
      const double *pa = src + m * P + (size_t)add * WC, *ps = src + m * P + (size_t)sub * WC;
      double *o = hrow + m * WC;
      for (size_t j = 0; j < WC; j++) o[j] += pa[j] - ps[j];
    }
  } else if (add >= 0) {
    add_row(src, hrow, (size_t)add * WC, WC, P, 1.0);
  } else if (sub >= 0) {
    add_row(src, hrow, (size_t)sub * WC, WC, P, -1.0);
  }
}

/** Box sums along W (radius rW, per channel) of the 5 rows [W, C] of hrow into wrow. */
static void w_step(const double *hrow, double *wrow, int W, int C, int rW) {
  const size_t WC = (size_t)W * C;
  if (rW == 0) {
    for (size_t j = 0; j < MAPS * WC; j++) wrow[j] = hrow[j];
    return;
  }
  for (int m = 0; m < MAPS; m++) {
    const double *s = hrow + m * WC;
    double *o = wrow + m * WC;
    for (int c = 0; c < C; c++) {
      double acc = 0.0;
      const int head = rW < W - 1 ? rW : W - 1;
      for (int i = 0; i <= head; i++) acc += s[c + (size_t)i * C];
      o[c] = acc;
      for (int i = 1; i < W; i++) {
        if (i + rW < W) acc += s[c + (size_t)(i + rW) * C];
        if (i - rW - 1 >= 0) acc -= s[c + (size_t)(i - rW - 1) * C];
        o[c + (size_t)i * C] = acc;
      }
    }
  }
}

/** Sum of cc over one row of box sums S = [S_a, S_b, S_aa, S_bb, S_ab], each [WC]. */
static double loss_row(const double *S, size_t WC, double inv_n) {
  const double *Sa = S, *Sb = S + WC, *Saa = S + 2 * WC, *Sbb = S + 3 * WC, *Sab = S + 4 * WC;
  double sum = 0.0;
  for (size_t j = 0; j < WC; j++) {
    const double sa = Sa[j], sb = Sb[j];
    const double cross = Sab[j] - sa * sb * inv_n;
    const double va = Saa[j] - sa * sa * inv_n;
    const double vb = Sbb[j] - sb * sb * inv_n;
    sum += cross * cross / (va * vb + EPS);
  }
  return sum;
}

/**
 * Sum of cc over one row of box sums S; writes the row's coefficients
 * g [alpha, beta, gamma, dcc/dS_a, dcc/dS_b] to `slot` at element o (of [5, P]) and adds them
 * to acc2, minus what slot held there.
 */
static double coefficient_row(const double *S, size_t WC, double inv_n, double g, double *acc2,
                              double *slot, size_t o, size_t P) {
  const double *Sa = S, *Sb = S + WC, *Saa = S + 2 * WC, *Sbb = S + 3 * WC, *Sab = S + 4 * WC;
  const double gn = -g * inv_n;
  double sum = 0.0;
  double *A0 = acc2 + o, *A1 = A0 + P, *A2 = A1 + P, *A3 = A2 + P, *A4 = A3 + P;
  double *R0 = slot + o, *R1 = R0 + P, *R2 = R1 + P, *R3 = R2 + P, *R4 = R3 + P;
  for (size_t j = 0; j < WC; j++) {
    const double sa = Sa[j], sb = Sb[j];
    const double cross = Sab[j] - sa * sb * inv_n;
    const double va = Saa[j] - sa * sa * inv_n;
    const double vb = Sbb[j] - sb * sb * inv_n;
    const double den = 1.0 / (va * vb + EPS);
    const double cc = cross * cross * den;
    sum += cc;
    const double alpha = 2.0 * cross * den;
    const double beta = -cc * vb * den;
    const double gamma = -cc * va * den;
    const double c0 = g * alpha, c1 = g * beta, c2 = g * gamma;
    const double c3 = gn * (alpha * sb + 2.0 * beta * sa);
    const double c4 = gn * (alpha * sa + 2.0 * gamma * sb);
    A0[j] += c0 - R0[j];
    A1[j] += c1 - R1[j];
    A2[j] += c2 - R2[j];
    A3[j] += c3 - R3[j];
    A4[j] += c4 - R4[j];
    R0[j] = c0;
    R1[j] = c1;
    R2[j] = c2;
    R3[j] = c3;
    R4[j] = c4;
  }
  return sum;
}

/** One row of gradients at element o: da = T3 + 2a T1 + b T0, db = T4 + 2b T2 + a T0. */
static void gradient_row(const double *T, size_t WC, const float *a, const float *b, float *da,
                         float *db, size_t o) {
  const double *T0 = T, *T1 = T + WC, *T2 = T + 2 * WC, *T3 = T + 3 * WC, *T4 = T + 4 * WC;
  for (size_t j = 0; j < WC; j++) {
    const double x = a[o + j], y = b[o + j];
    da[o + j] = (float)(T3[j] + 2.0 * x * T1[j] + y * T0[j]);
    db[o + j] = (float)(T4[j] + 2.0 * y * T2[j] + x * T0[j]);
  }
}

static void zero64(double *p, size_t n) {
  for (size_t i = 0; i < n; i++) p[i] = 0.0;
}

/* ---------------------------------------------------------------------------------- */
/* Threads: T instances on one shared memory each call lncc(..., t, T); thread t owns the */
/* rows of fixed blocks of LNCC_BLOCK rows (a split that does not depend on T: the running */
/* sums along H start afresh at every block, and the loss is summed per block, then over   */
/* blocks in order), and all threads meet at a barrier in the work memory between steps    */
/* that read other rows.                                                                  */
/* ---------------------------------------------------------------------------------- */

#define LNCC_BLOCK 8

/** Box sum along H of row h of the 5 planes of src, from scratch (rows h - rH .. h + rH). */
static void h_start(const double *src, double *hrow, int h, int H, size_t WC, int rH) {
  const size_t P = (size_t)H * WC;
  const int first = h - rH > 0 ? h - rH : 0;
  const int last = h + rH < H - 1 ? h + rH : H - 1;
  for (int m = 0; m < MAPS; m++) {
    const double *s = src + m * P + (size_t)first * WC;
    double *o = hrow + m * WC;
    for (size_t j = 0; j < WC; j++) o[j] = s[j];
  }
  for (int k = first + 1; k <= last; k++) add_row(src, hrow, (size_t)k * WC, WC, P, 1.0);
}

/** h_step, starting afresh at the first row of every block. */
static void h_block_step(const double *src, double *hrow, int h, int H, size_t WC, int rH) {
  if (h % LNCC_BLOCK == 0) h_start(src, hrow, h, H, WC, rH);
  else h_step(src, hrow, h, H, WC, rH);
}

/*
 * Spins before a barrier sleeps (memory.atomic.wait): waking a sleeping thread takes tens of
 * microseconds, and a call at 96x112x96 meets 2 barriers per depth slice, about 0.1 ms of work
 * apart, so most waits end within the spin.
 */
#ifndef BARRIER_SPINS
#define BARRIER_SPINS (1 << 16)
#endif

/** All T threads wait here until every one has arrived (bar: int[2] in shared memory, zeroed). */
static void barrier(int *bar, int T) {
  if (T <= 1) return;
  const int gen = __atomic_load_n(&bar[1], __ATOMIC_SEQ_CST);
  if (__atomic_add_fetch(&bar[0], 1, __ATOMIC_SEQ_CST) == T) {
    __atomic_store_n(&bar[0], 0, __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&bar[1], 1, __ATOMIC_SEQ_CST);
    __builtin_wasm_memory_atomic_notify(&bar[1], (unsigned)-1);
    return;
  }
  for (int spin = 0; __atomic_load_n(&bar[1], __ATOMIC_SEQ_CST) == gen; spin++) {
    if (spin >= BARRIER_SPINS) __builtin_wasm_memory_atomic_wait32(&bar[1], gen, -1);
  }
}

static size_t lncc_blocks(int H) { return ((size_t)H + LNCC_BLOCK - 1) / LNCC_BLOCK; }

/** Work memory in bytes for one call with T threads (see the layout in lncc). */
__attribute__((export_name("lncc_work_bytes"))) size_t lncc_work_bytes(int D, int H, int W, int C,
                                                                       int rD, int with_grad,
                                                                       int T) {
  const size_t WC = (size_t)W * C, P = (size_t)H * WC;
  size_t slots = 0;
  if (with_grad) slots = 2 * (size_t)rD + 1 < (size_t)D ? 2 * (size_t)rD + 1 : (size_t)D;
  return 16 + (lncc_blocks(H) + MAPS * P * (2 + slots) + 2 * MAPS * WC * (size_t)T) * sizeof(double);
}

/**
 * The loss -mean(cc) of a and b [B, D, H, W, C] with window radii rD, rH, rW; with
 * with_grad also writes d loss/d a and d loss/d b to da and db. `work`: lncc_work_bytes
 * (zeroed by the caller: its first 16 bytes are the barrier), shared by the T threads;
 * thread t (0 <= t < T) computes its blocks of rows. The loss is returned by thread 0.
 * Work layout: barrier int[4], block sums [blocks], acc1 and acc2 [5, H, W*C], `slots` ring
 * slices [5, H, W*C], then per thread hrow and wrow [5, W*C].
 */
__attribute__((export_name("lncc"))) double lncc(const float *a, const float *b, float *da,
                                                 float *db, int B, int D, int H, int W, int C,
                                                 int rD, int rH, int rW, int with_grad,
                                                 double *work, int t, int T) {
  const size_t WC = (size_t)W * C, P = (size_t)H * WC;
  const size_t total = (size_t)B * D * P;
  if (total == 0) return __builtin_nan("");
  const double inv_n = 1.0 / ((double)(2 * rD + 1) * (2 * rH + 1) * (2 * rW + 1));
  const int slots = with_grad ? (2 * rD + 1 < D ? 2 * rD + 1 : D) : 0;
  const size_t nblocks = lncc_blocks(H);
  int *bar = (int *)work;
  double *sums = work + 2;
  double *acc1 = sums + nblocks, *acc2 = acc1 + MAPS * P, *ring = acc2 + MAPS * P;
  double *hrow = ring + (size_t)slots * MAPS * P + (size_t)t * 2 * MAPS * WC;
  double *wrow = hrow + MAPS * WC;
  /* this thread's blocks [k0, k1) and rows [h0, h1) */
  const int k0 = (int)(nblocks * t / T), k1 = (int)(nblocks * (t + 1) / T);
  const int h0 = k0 * LNCC_BLOCK, h1 = k1 * LNCC_BLOCK < H ? k1 * LNCC_BLOCK : H;
  const size_t e0 = (size_t)h0 * WC, ne = (size_t)(h1 - h0) * WC; /* own elements of a plane */
  const double g = -1.0 / (double)total;
  for (int k = k0; k < k1; k++) sums[k] = 0.0;
  for (int bi = 0; bi < B; bi++) {
    const long off = (long)bi * D * (long)P;
    /* depth sums of the own rows only: elementwise, so any split gives the same values */
    if (rD > 0) {
      for (int m = 0; m < MAPS; m++) zero64(acc1 + m * P + e0, ne);
      for (int k = 0; k < rD && k < D; k++)
        depth_step_rows(acc1, a, b, off + k * (long)P, -1, P, 0, e0, ne);
    }
    if (with_grad)
      for (int m = 0; m < MAPS; m++) zero64(acc2 + m * P + e0, ne);
    for (int z = 0; z < D; z++) {
      const long add = z + rD < D ? off + (long)(z + rD) * (long)P : -1;
      const long sub = z - rD - 1 >= 0 ? off + (long)(z - rD - 1) * (long)P : -1;
      depth_step_rows(acc1, a, b, add, sub, P, rD == 0, e0, ne);
      barrier(bar, T);
      if (!with_grad) {
        for (int h = h0; h < h1; h++) {
          h_block_step(acc1, hrow, h, H, WC, rH);
          w_step(hrow, wrow, W, C, rW);
          sums[h / LNCC_BLOCK] += loss_row(wrow, WC, inv_n);
        }
        barrier(bar, T);
        continue;
      }
      double *slot = ring + (size_t)(z % slots) * MAPS * P;
      if (z < slots)
        for (int m = 0; m < MAPS; m++) zero64(slot + m * P + e0, ne);
      for (int h = h0; h < h1; h++) {
        h_block_step(acc1, hrow, h, H, WC, rH);
        w_step(hrow, wrow, W, C, rW);
        sums[h / LNCC_BLOCK] += coefficient_row(wrow, WC, inv_n, g, acc2, slot, (size_t)h * WC, P);
      }
      barrier(bar, T);
      if (z >= rD) {
        const size_t o = (size_t)off + (size_t)(z - rD) * P;
        for (int h = h0; h < h1; h++) {
          h_block_step(acc2, hrow, h, H, WC, rH);
          w_step(hrow, wrow, W, C, rW);
          gradient_row(wrow, WC, a, b, da, db, o + (size_t)h * WC);
        }
      }
    }
    if (!with_grad) continue;
    for (int e = D - rD > 0 ? D - rD : 0; e < D; e++) {
      const int drop = e - rD - 1;
      barrier(bar, T); /* every thread has read acc2 for the previous slice */
      if (drop >= 0) {
        const double *s = ring + (size_t)(drop % slots) * MAPS * P;
        for (int m = 0; m < MAPS; m++) {
          double *A = acc2 + m * P + e0;
          const double *S = s + m * P + e0;
          for (size_t j = 0; j < ne; j++) A[j] -= S[j];
        }
      }
      barrier(bar, T);
      const size_t o = (size_t)off + (size_t)e * P;
      for (int h = h0; h < h1; h++) {
        h_block_step(acc2, hrow, h, H, WC, rH);
        w_step(hrow, wrow, W, C, rW);
        gradient_row(wrow, WC, a, b, da, db, o + (size_t)h * WC);
      }
    }
    barrier(bar, T); /* before the next batch item resets acc1 and acc2 */
  }
  barrier(bar, T);
  if (t != 0) return 0.0;
  double sum = 0.0;
  for (size_t k = 0; k < nblocks; k++) sum += sums[k];
  return -sum / (double)total;
}
