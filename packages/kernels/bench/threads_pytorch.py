#!/usr/bin/env python3
"""PyTorch rows of bench/threads.mjs: the same ops at 1 thread and at all threads.

    /usr/bin/python3 packages/kernels/bench/threads_pytorch.py --save
    /usr/bin/python3 packages/kernels/bench/threads_pytorch.py --threads 1,all --sizes 96x112x96

float32, batch 1, C = 1 (channels first, as torch needs), torch.manual_seed(1234); one child
process per measurement (torch.set_num_threads(N), OMP/MKL threads N), median ms of up to 7
samples after a warm-up run (50 when a call takes < 5 ms), within REGKIT_BENCH_SECONDS (default
20 s); a sample is the mean of enough calls for ~20 ms (1 call unless a call is shorter).

  * warp_fwd: grid_sample (bilinear/trilinear, zeros, align_corners=True) forward alone, under
    torch.no_grad(), with the field of warp_fwd_bwd (2D: a 6x7 random grid upsampled
    bilinearly); the grid is built once, outside the timing (PyTorch's fastest form);
  * warp_fwd_bwd: grid_sample (trilinear, zeros, align_corners=True) of a uniform image with
    a smooth random displacement (at most ~3 voxels: a 6x7x6 random grid upsampled
    trilinearly), forward + backward w.r.t. image and field (dy uniform [-1, 1]);
  * warp_fwd_bwd_field: the same, backward w.r.t. the field only (the image is data, as in
    registration and in training a network);
  * lncc_fwd_bwd: local NCC, window 9, in the fastest PyTorch form measured here: box sums by
    cumulative sums along each axis (O(1) per voxel, zero padding), cc = cross^2 /
    (I_var J_var + 1e-5), loss = -mean(cc), forward + backward w.r.t. both images;
  * lncc_sep_fwd_bwd: the same with the box sums as three 1D convolutions of ones (MONAI's
    LocalNormalizedCrossCorrelationLoss, kernel_type='rectangular');
  * lncc_conv9_fwd_bwd: VoxelMorph's form, five conv3d with a 9x9x9 ones filter;
  * conv3d_s2_32_fwd_bwd: conv3d 3x3x3, stride 2, padding 1, 32 -> 32 channels on the
    half-resolution grid ceil(S/2), forward + backward w.r.t. input and filter;
  * jacobian_determinant: det(I + grad u) of the warp_fwd_bwd field, torch.gradient
    (edge_order=1) and the closed-form 3x3 det (as packages/core/bench/pytorch_bench.py);
  * mind_ssc_fwd_bwd: Heinrich's MINDSSC (mindssc of packages/losses/bench/pytorch_bench.py:
    ConvexAdam / voxelmorph++), radius 1, dilation 2, 12 channels, of a uniform image,
    forward + backward w.r.t. the image of sum(MIND * dy), dy uniform [-1, 1];
  * leaky_relu_fwd_bwd: F.leaky_relu (slope 0.2) of x [1, 16, *S] uniform [-1, 1] (the
    activation of a full-resolution 16-channel U-Net layer), forward + backward of
    sum(y * dy), dy uniform [-1, 1].

Prints one JSON line per measurement; --save appends them to bench/results/threads_pytorch.jsonl.
"""

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time

OPS = [
    "warp_fwd",
    "warp_fwd_bwd",
    "warp_fwd_bwd_field",
    "lncc_fwd_bwd",
    "lncc_sep_fwd_bwd",
    "lncc_conv9_fwd_bwd",
    "conv3d_s2_32_fwd_bwd",
    "jacobian_determinant",
    "mind_ssc_fwd_bwd",
    "leaky_relu_fwd_bwd",
]


def box_cumsum(x, r):
    """Zero-padded box sums of radius r along the last three axes by cumulative sums."""
    import torch

    for dim in (2, 3, 4):
        n = x.shape[dim]
        c = torch.cumsum(x, dim)
        c = torch.cat([torch.zeros_like(c.narrow(dim, 0, 1)), c], dim)
        idx = torch.arange(n)
        hi = torch.clamp(idx + r + 1, max=n)
        lo = torch.clamp(idx - r, min=0)
        x = c.index_select(dim, hi) - c.index_select(dim, lo)
    return x


def box_separable(x, r):
    """Zero-padded box sums by three 1D convolutions of ones (MONAI separable_filtering)."""
    import torch
    import torch.nn.functional as F

    k = 2 * r + 1
    c = x.shape[1]
    for shape, pad in (((k, 1, 1), (r, 0, 0)), ((1, k, 1), (0, r, 0)), ((1, 1, k), (0, 0, r))):
        w = torch.ones((c, 1) + shape, dtype=x.dtype)
        x = F.conv3d(x, w, padding=pad, groups=c)
    return x


def box_conv9(x, r):
    import torch
    import torch.nn.functional as F

    k = 2 * r + 1
    w = torch.ones((1, 1, k, k, k), dtype=x.dtype)
    return torch.cat([F.conv3d(x[:, i : i + 1], w, padding=r) for i in range(x.shape[1])], 1)


def lncc(I, J, box, window=9):
    import torch

    r = window // 2
    S = box(torch.cat([I, J, I * I, J * J, I * J], 1), r)
    I_sum, J_sum, I2_sum, J2_sum, IJ_sum = S.unbind(1)
    n = float(window ** 3)
    u_I, u_J = I_sum / n, J_sum / n
    cross = IJ_sum - u_J * I_sum - u_I * J_sum + u_I * u_J * n
    I_var = I2_sum - 2 * u_I * I_sum + u_I * u_I * n
    J_var = J2_sum - 2 * u_J * J_sum + u_J * u_J * n
    cc = cross * cross / (I_var * J_var + 1e-5)
    return -torch.mean(cc)


def run_one(op, size, threads):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:
        pass
    torch.manual_seed(1234)
    shape = tuple(int(s) for s in size.split("x"))
    f32 = torch.float32
    if op in ("warp_fwd", "warp_fwd_bwd", "warp_fwd_bwd_field"):
        # warp_fwd_bwd_field: the image is data (no gradient), as in registration and training;
        # warp_fwd: the forward alone (no autograd), 2D or 3D
        nd = len(shape)
        image = torch.rand((1, 1) + shape, dtype=f32).requires_grad_(op == "warp_fwd_bwd")
        coarse = (torch.rand((1, nd) + (6, 7, 6)[:nd], dtype=f32) * 2 - 1) * 3
        disp = F.interpolate(coarse, size=shape, mode="trilinear" if nd == 3 else "bilinear", align_corners=True)
        base = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=f32) for n in shape], indexing="ij"))
        pos = base[None] + disp  # voxel positions (z, y, x) / (y, x)
        scale = torch.tensor([2.0 / (n - 1) for n in shape]).view((1, nd) + (1,) * nd)
        grid = (pos * scale - 1).permute(0, *range(2, nd + 2), 1).flip(-1).contiguous()
        grid.requires_grad_(op != "warp_fwd")
        dy = torch.rand((1, 1) + shape, dtype=f32) * 2 - 1

        if op == "warp_fwd":

            def fn():
                with torch.no_grad():
                    return F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        else:

            def fn():
                image.grad = None
                grid.grad = None
                out = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
                (out * dy).sum().backward()
    elif op.startswith("lncc"):
        box = {"lncc_fwd_bwd": box_cumsum, "lncc_sep_fwd_bwd": box_separable, "lncc_conv9_fwd_bwd": box_conv9}[op]
        a = torch.rand((1, 1) + shape, dtype=f32).requires_grad_(True)
        b = torch.rand((1, 1) + shape, dtype=f32).requires_grad_(True)

        def fn():
            a.grad = None
            b.grad = None
            lncc(a, b, box).backward()
    elif op == "conv3d_s2_32_fwd_bwd":
        half = tuple((n + 1) // 2 for n in shape)
        x = (torch.rand((1, 32) + half, dtype=f32) * 2 - 1).requires_grad_(True)
        w = ((torch.rand((32, 32, 3, 3, 3), dtype=f32) * 2 - 1) * 0.1).requires_grad_(True)

        def fn():
            x.grad = None
            w.grad = None
            F.conv3d(x, w, stride=2, padding=1).sum().backward()
    elif op == "jacobian_determinant":
        # as packages/core/bench/pytorch_bench.py: torch.gradient (edge_order=1), closed-form det
        coarse = (torch.rand((1, 3, 6, 7, 6), dtype=f32) * 2 - 1) * 3
        disp = F.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)

        def fn():
            g = [torch.gradient(disp[0, c], dim=(0, 1, 2)) for c in range(3)]
            a, b, c = 1.0 + g[0][0], g[0][1], g[0][2]
            d, e, f = g[1][0], 1.0 + g[1][1], g[1][2]
            gg, h, i = g[2][0], g[2][1], 1.0 + g[2][2]
            return a * (e * i - f * h) - b * (d * i - f * gg) + c * (d * h - e * gg)
    elif op == "mind_ssc_fwd_bwd":
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "losses", "bench"))
        from pytorch_bench import mindssc

        image = torch.rand((1, 1) + shape, dtype=f32).requires_grad_(True)
        dy = torch.rand((1, 12) + shape, dtype=f32) * 2 - 1

        def fn():
            image.grad = None
            (mindssc(image, radius=1, dilation=2) * dy).sum().backward()
    elif op == "leaky_relu_fwd_bwd":
        x = (torch.rand((1, 16) + shape, dtype=f32) * 2 - 1).requires_grad_(True)
        dy = torch.rand((1, 16) + shape, dtype=f32) * 2 - 1

        def fn():
            x.grad = None
            F.leaky_relu(x, 0.2).backward(dy)
    else:
        raise ValueError(f"unknown op {op!r}")
    budget = float(os.environ.get("REGKIT_BENCH_SECONDS", "20"))
    batch = 1

    def run():
        t0 = time.perf_counter()
        for _ in range(batch):
            fn()
        return (time.perf_counter() - t0) * 1000.0 / batch

    first = run()
    times = [first] if first > budget * 500 else []
    if not times:
        # warm-up, then calls per sample: enough for ~20 ms when a call is short (as threads.mjs)
        for _ in range(50 if first < 5 else 0):
            run()
        batch = max(1, round(20 / max(run(), 1e-3)))
    start = time.perf_counter()
    while len(times) < 7 and (not times or time.perf_counter() - start < budget):
        times.append(run())
    print(json.dumps({
        "suite": "kernels",
        "impl": "pytorch",
        "backend": "torch-cpu",
        "threads": threads,
        "op": op,
        "size": size,
        "ms": round(statistics.median(times), 3),
        "runs": len(times),
        "calls_per_sample": batch,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
    }), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", default="1,all", help="comma-separated counts; 'all': os.cpu_count()")
    ap.add_argument("--sizes", default="96x112x96")
    ap.add_argument("--ops", default=",".join(OPS))
    ap.add_argument("--save", action="store_true")
    ap.add_argument("--one", nargs=3, metavar=("OP", "SIZE", "THREADS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        run_one(args.one[0], args.one[1], int(args.one[2]))
        return 0
    counts = [os.cpu_count() if t == "all" else int(t) for t in args.threads.split(",")]
    ops = args.ops.split(",")
    bad = [o for o in ops if o not in OPS]
    if bad:
        ap.error(f"unknown op(s) {bad}; known: {OPS}")
    cmd = " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv)
    lines = [json.dumps({"command": cmd})]
    print(lines[0], flush=True)
    failures = 0
    for size in args.sizes.split(","):
        for op in ops:
            for n in counts:
                env = dict(os.environ)
                for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
                    env[k] = str(n)
                proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", op, size, str(n)],
                                      env=env, stdout=subprocess.PIPE, text=True)
                out = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
                if proc.returncode != 0 or not out:
                    failures += 1
                    print(f"threads_pytorch: {op} {size} {n} threads failed", file=sys.stderr, flush=True)
                    continue
                print(out[-1], flush=True)
                lines.append(out[-1])
    if args.save:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "threads_pytorch.jsonl")
        old = open(path).read() if os.path.exists(path) else ""
        with open(path + ".tmp", "w") as f:
            f.write(old + "\n".join(lines) + "\n")
        os.replace(path + ".tmp", path)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
