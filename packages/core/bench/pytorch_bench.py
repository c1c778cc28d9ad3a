#!/usr/bin/env python3
"""PyTorch CPU reference timings for regkit's core ops.

Run with the system interpreter (Debian python3-torch + numpy):

    /usr/bin/python3 packages/core/bench/pytorch_bench.py [--threads N]
        [--sizes 192x192,96x112x96,160x192x224] [--ops warp_fwd,...]

Every (op, size) measurement runs in its own subprocess (the script re-invokes
itself with ``--one OP SIZE``) so that the reported peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss``) belongs to that op alone (it does include
the Python + libtorch baseline of the process).  Each measurement does 2 warm-up
runs, then timed runs until 7 runs or 20 s have been spent, and reports the
median.

Output: one JSON object per line on stdout.  The first line is
``{"command": "..."}`` (how the file was produced); then one line per
measurement:

    {"suite":"core","impl":"pytorch","backend":"torch-cpu","threads":1,
     "op":"warp_fwd","size":"96x112x96","ms":12.3,"runs":7,"peak_rss_mb":250.1}

Semantics (float32, batch 1, channels first as torch needs):
  * sizes are spatial shapes: HxW (2-D) or DxHxW (3-D);
  * displacement / velocity fields are (1, ndim, *size) in voxel units, channel
    c being the displacement along spatial axis c (VoxelMorph convention); the
    sampling grid is identity + displacement, normalised to [-1, 1] with
    align_corners=True and reordered to torch's (x, y[, z]) last-dim layout;
  * warp_fwd:             grid_sample(image C=1, grid, bilinear, zeros), grid
                          built outside the timed region;
  * warp_fwd_bwd:         image and displacement require grad; grid building,
                          grid_sample and backward(dy) are timed together;
  * compose_fields:       inner + grid_sample(outer, id + inner, bilinear,
                          border);
  * integrate_velocity:   scaling and squaring, u = v / 128, then 7 times
                          u = compose(u, u);
  * resize_field_fwd_bwd: a field on the grid ceil(S/2) resized to S (interpolate,
                          bilinear/trilinear, align_corners=True, components scaled
                          by (S - 1)/(S/2 - 1)) and backward(dy): regkit resizeField;
  * jacobian_determinant: det(I + grad u), torch.gradient (central inside,
                          one-sided at borders), closed-form 2x2 / 3x3 det.
"""

import argparse
import json
import math
import os
import resource
import shlex
import statistics
import subprocess
import sys
import time

ALL_OPS = [
    "warp_fwd",
    "warp_fwd_bwd",
    "compose_fields",
    "integrate_velocity",
    "jacobian_determinant",
    "resize_field_fwd_bwd",
]
DEFAULT_SIZES = "192x192,96x112x96,160x192x224"
WARMUP = 2
MAX_RUNS = 7
TIME_BUDGET_S = 20.0
AMPLITUDE = 3.0  # voxels
INTEGRATION_STEPS = 7


def parse_size(s):
    dims = tuple(int(x) for x in s.lower().split("x"))
    if len(dims) not in (2, 3) or any(d < 2 for d in dims):
        raise ValueError(f"bad size {s!r}: expected HxW or DxHxW with dims >= 2")
    return dims


# --------------------------------------------------------------------------
# measurement (child process)
# --------------------------------------------------------------------------


def run_one(op, size_str, threads):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:
        pass  # already set (cannot happen in a fresh process)
    torch.set_grad_enabled(False)
    torch.manual_seed(1234)

    shape = parse_size(size_str)
    ndim = len(shape)
    f32 = torch.float32

    # identity grid in voxel units, channels first: (1, ndim, *shape)
    axes = [torch.arange(n, dtype=f32) for n in shape]
    identity = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0).unsqueeze(0)
    # voxel -> normalised [-1, 1] (align_corners=True): x * 2/(n-1) - 1
    scale = torch.tensor([2.0 / (n - 1) for n in shape], dtype=f32).view(
        1, ndim, *([1] * ndim)
    )
    perm = (0,) + tuple(range(2, ndim + 2)) + (1,)  # channels last
    rev = list(range(ndim - 1, -1, -1))  # (d,h,w) -> (x=w, y=h, z=d)

    def to_grid(locs_vox):
        """voxel locations (1, ndim, *shape) -> torch grid (1, *shape, ndim)."""
        g = locs_vox * scale - 1.0
        return g.permute(*perm)[..., rev]

    def smooth_field(amplitude, seed_phase):
        """Deterministic smooth displacement: sums of sinusoids, ~amplitude vox."""
        comps = []
        for c in range(ndim):
            f = torch.ones(shape, dtype=f32)
            for a, n in enumerate(shape):
                coord = torch.arange(n, dtype=f32)
                period = n / (1.5 + 0.5 * ((a + c) % 3))
                phase = seed_phase + 0.7 * c + 1.3 * a
                v = torch.sin(2 * math.pi * coord / period + phase)
                view = [1] * ndim
                view[a] = n
                f = f * v.view(view)
            comps.append(amplitude * f)
        return torch.stack(comps, dim=0).unsqueeze(0).contiguous()

    def compose(outer, inner):
        return inner + F.grid_sample(
            outer,
            to_grid(identity + inner),
            mode="bilinear",
            padding_mode="border",
            align_corners=True,
        )

    image = torch.rand((1, 1) + shape, dtype=f32)
    disp = smooth_field(AMPLITUDE, 0.3)

    if op == "warp_fwd":
        grid = to_grid(identity + disp).contiguous()

        def fn():
            return F.grid_sample(
                image, grid, mode="bilinear", padding_mode="zeros", align_corners=True
            )

    elif op == "warp_fwd_bwd":
        img_leaf = image.clone().requires_grad_(True)
        disp_leaf = disp.clone().requires_grad_(True)
        dy = torch.rand((1, 1) + shape, dtype=f32)

        def fn():
            img_leaf.grad = None
            disp_leaf.grad = None
            with torch.enable_grad():
                grid = to_grid(identity + disp_leaf)
                out = F.grid_sample(
                    img_leaf,
                    grid,
                    mode="bilinear",
                    padding_mode="zeros",
                    align_corners=True,
                )
                out.backward(dy)
            return img_leaf.grad, disp_leaf.grad

    elif op == "compose_fields":
        inner = disp
        outer = smooth_field(AMPLITUDE, 1.1)

        def fn():
            return compose(outer, inner)

    elif op == "integrate_velocity":
        vel = smooth_field(AMPLITUDE, 2.0)

        def fn():
            u = vel / (2.0**INTEGRATION_STEPS)
            for _ in range(INTEGRATION_STEPS):
                u = compose(u, u)
            return u

    elif op == "resize_field_fwd_bwd":
        half = [(n + 1) // 2 for n in shape]
        coarse = torch.randn(1, ndim, *half, dtype=f32)
        factor = torch.tensor([(n - 1.0) / (h - 1.0) for n, h in zip(shape, half)],
                              dtype=f32).view(1, ndim, *([1] * ndim))
        dy_field = torch.randn(1, ndim, *shape, dtype=f32)
        mode = "bilinear" if ndim == 2 else "trilinear"

        def fn():
            with torch.enable_grad():
                leaf = coarse.clone().requires_grad_(True)
                out = F.interpolate(leaf, size=list(shape), mode=mode, align_corners=True)
                (out * factor).backward(dy_field)
            return leaf.grad

    elif op == "jacobian_determinant":
        spatial = tuple(range(ndim))

        def fn():
            # g[c][a] = d u_c / d x_a  (spacing 1, edge_order=1)
            g = [torch.gradient(disp[0, c], dim=spatial) for c in range(ndim)]
            if ndim == 2:
                a, b = 1.0 + g[0][0], g[0][1]
                c, d = g[1][0], 1.0 + g[1][1]
                return a * d - b * c
            a, b, c = 1.0 + g[0][0], g[0][1], g[0][2]
            d, e, f = g[1][0], 1.0 + g[1][1], g[1][2]
            gg, h, i = g[2][0], g[2][1], 1.0 + g[2][2]
            return a * (e * i - f * h) - b * (d * i - f * gg) + c * (d * h - e * gg)

    else:
        raise ValueError(f"unknown op {op!r}")

    for _ in range(WARMUP):
        fn()

    times = []
    start = time.perf_counter()
    while len(times) < MAX_RUNS:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
        if time.perf_counter() - start >= TIME_BUDGET_S:
            break

    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    rec = {
        "suite": "core",
        "impl": "pytorch",
        "backend": "torch-cpu",
        "threads": threads,
        "op": op,
        "size": "x".join(str(n) for n in shape),
        "ms": round(statistics.median(times), 3),
        "runs": len(times),
        "peak_rss_mb": round(peak_kib / 1024.0, 1),
    }
    print(json.dumps(rec), flush=True)


# --------------------------------------------------------------------------
# driver (parent process)
# --------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sizes", default=DEFAULT_SIZES)
    ap.add_argument("--ops", default="all")
    ap.add_argument("--one", nargs=2, metavar=("OP", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.threads < 1:
        ap.error("--threads must be >= 1")

    if args.one:
        run_one(args.one[0], args.one[1], args.threads)
        return 0

    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    for s in sizes:
        try:
            parse_size(s)
        except ValueError as e:
            ap.error(str(e))
    if args.ops.strip() in ("", "all"):
        ops = list(ALL_OPS)
    else:
        ops = [o.strip() for o in args.ops.split(",") if o.strip()]
        bad = [o for o in ops if o not in ALL_OPS]
        if bad:
            ap.error(f"unknown op(s) {bad}; known: {ALL_OPS}")

    cmd = " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv)
    print(json.dumps({"command": cmd}), flush=True)

    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(args.threads)

    failures = 0
    script = os.path.abspath(__file__)
    for size in sizes:
        for op in ops:
            child = [
                sys.executable,
                script,
                "--one",
                op,
                size,
                "--threads",
                str(args.threads),
            ]
            proc = subprocess.run(child, env=env, stdout=subprocess.PIPE, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
            if proc.returncode != 0 or not lines:
                failures += 1
                print(
                    f"pytorch_bench: {op} {size} failed (exit {proc.returncode})",
                    file=sys.stderr,
                    flush=True,
                )
                continue
            print(lines[-1], flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
