#!/usr/bin/env python3
"""PyTorch CPU reference timings for regkit's losses (packages/losses/bench/run.mjs).

Run with the system interpreter (Debian python3-torch + numpy):

    /usr/bin/python3 packages/losses/bench/pytorch_bench.py [--threads N]
        [--sizes 96x112x96] [--ops lncc_fwd,...]

Every (op, size) measurement runs in its own subprocess (the script re-invokes
itself with ``--one OP SIZE``) so that the reported peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss``) belongs to that op alone (it includes
the Python + libtorch baseline of the process).  Each measurement does 1
warm-up run, then timed runs until 7 runs or REGKIT_BENCH_SECONDS (default 20 s)
have been spent, and reports the median; when the warm-up alone exceeds half
that budget it is the single sample (runs = 1), as in run.mjs.

Output: one JSON object per line on stdout.  The first line is
``{"command": "..."}``; then one line per measurement:

    {"suite":"losses","impl":"pytorch","backend":"torch-cpu","threads":1,
     "op":"lncc_fwd","size":"96x112x96","ms":123.4,"runs":7,"peak_rss_mb":250.1}

Semantics (float32, batch 1, C = 1, channels first as torch needs; a and b
independent uniform [0, 1] images, torch.manual_seed(1234)) — the same
definitions as the regkit losses and their fixture generators
(packages/losses/test/fixtures/make_*_fixtures.py), in float32:
  * lncc_fwd / lncc_fwd_bwd: VoxelMorph NCC, window 9: five conv3d with a
    ones 9x9x9 filter, padding 4, cc = cross^2 / (I_var J_var + 1e-5),
    loss = -mean(cc); _fwd_bwd times forward + backward w.r.t. a and b;
  * mi_fwd / mi_fwd_bwd: MONAI GlobalMutualInformationLoss (gaussian Parzen
    windows), 23 bins, sigma = 0.5 * bin spacing, range [0, 1], eps 1e-7
    (as packages/losses/src/mutual_information.ts);
  * mind_ssc_fwd: Heinrich's MINDSSC (ConvexAdam / voxelmorph++), radius 1,
    dilation 2, 12 channels (output tensor, forward only).
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

ALL_OPS = ["lncc_fwd", "lncc_fwd_bwd", "mi_fwd", "mi_fwd_bwd", "mind_ssc_fwd"]
DEFAULT_SIZES = "96x112x96"
WARMUP = 1
MAX_RUNS = 7
TIME_BUDGET_S = float(os.environ.get("REGKIT_BENCH_SECONDS", "20"))
EPS = 1e-7


def parse_size(s):
    dims = tuple(int(x) for x in s.lower().split("x"))
    if len(dims) != 3 or any(d < 2 for d in dims):
        raise ValueError(f"bad size {s!r}: expected DxHxW with dims >= 2")
    return dims


# --------------------------------------------------------------------------
# losses (float32 versions of the fixture generators' torch code)
# --------------------------------------------------------------------------


def local_ncc(I, J, window=9):
    """VoxelMorph NCC (pytorch version), I, J: (1, 1, D, H, W)."""
    import torch
    import torch.nn.functional as F

    win = [window] * 3
    sum_filt = torch.ones([1, 1, *win], dtype=I.dtype)
    pad_no = window // 2
    stride = (1, 1, 1)
    padding = (pad_no, pad_no, pad_no)
    I2 = I * I
    J2 = J * J
    IJ = I * J
    I_sum = F.conv3d(I, sum_filt, stride=stride, padding=padding)
    J_sum = F.conv3d(J, sum_filt, stride=stride, padding=padding)
    I2_sum = F.conv3d(I2, sum_filt, stride=stride, padding=padding)
    J2_sum = F.conv3d(J2, sum_filt, stride=stride, padding=padding)
    IJ_sum = F.conv3d(IJ, sum_filt, stride=stride, padding=padding)
    win_size = float(window ** 3)
    u_I = I_sum / win_size
    u_J = J_sum / win_size
    cross = IJ_sum - u_J * I_sum - u_I * J_sum + u_I * u_J * win_size
    I_var = I2_sum - 2 * u_I * I_sum + u_I * u_I * win_size
    J_var = J2_sum - 2 * u_J * J_sum + u_J * u_J * win_size
    cc = cross * cross / (I_var * J_var + 1e-5)
    return -torch.mean(cc)


def parzen(img, bins=23, sigma_ratio=0.5, rng=(0.0, 1.0)):
    """MONAI parzen_windowing_gaussian after the regkit range rescale."""
    import torch

    bin_centers = torch.linspace(0.0, 1.0, bins, dtype=img.dtype)
    sigma = torch.mean(bin_centers[1:] - bin_centers[:-1]) * sigma_ratio
    preterm = 1 / (2 * sigma ** 2)
    lo, hi = float(rng[0]), float(rng[1])
    img = (img - lo) / (hi - lo)
    img = torch.clamp(img, 0, 1)
    img = img.reshape(img.shape[0], -1, 1)  # (batch, num_sample, 1)
    weight = torch.exp(-preterm * (img - bin_centers[None, None, :]) ** 2)
    weight = weight / torch.sum(weight, dim=-1, keepdim=True)
    probability = torch.mean(weight, dim=-2, keepdim=True)  # (batch, 1, bins)
    return weight, probability


def mi_loss(a, b, bins=23):
    import torch

    wa, pa = parzen(a, bins)
    wb, pb = parzen(b, bins)
    pab = torch.bmm(wa.permute(0, 2, 1), wb).div(wa.shape[1])  # (B, bins, bins)
    papb = torch.bmm(pa.permute(0, 2, 1), pb)
    mi = torch.sum(pab * torch.log((pab + EPS) / (papb + EPS) + EPS), dim=(1, 2))
    return torch.mean(mi).neg()


def pdist_squared(x):
    import torch

    xx = (x ** 2).sum(dim=1).unsqueeze(2)
    yy = xx.permute(0, 2, 1)
    dist = xx + yy - 2.0 * torch.bmm(x.permute(0, 2, 1), x)
    dist[dist != dist] = 0
    dist = torch.clamp(dist, 0.0, float("inf"))
    return dist


def mindssc(img, radius=1, dilation=2):
    """Heinrich's MINDSSC (as make_feature_fixtures.mindssc_torch), float32."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    kernel_size = radius * 2 + 1
    six_neighbourhood = torch.Tensor([[0, 1, 1],
                                      [1, 1, 0],
                                      [1, 0, 1],
                                      [1, 1, 2],
                                      [2, 1, 1],
                                      [1, 2, 1]]).long()
    dist = pdist_squared(six_neighbourhood.t().unsqueeze(0)).squeeze(0)
    x, y = torch.meshgrid(torch.arange(6), torch.arange(6), indexing="ij")
    mask = ((x > y).view(-1) & (dist == 2).view(-1))
    idx_shift1 = six_neighbourhood.unsqueeze(1).repeat(1, 6, 1).view(-1, 3)[mask, :]
    idx_shift2 = six_neighbourhood.unsqueeze(0).repeat(6, 1, 1).view(-1, 3)[mask, :]
    mshift1 = torch.zeros(12, 1, 3, 3, 3, dtype=img.dtype)
    mshift1.view(-1)[torch.arange(12) * 27 + idx_shift1[:, 0] * 9
                     + idx_shift1[:, 1] * 3 + idx_shift1[:, 2]] = 1
    mshift2 = torch.zeros(12, 1, 3, 3, 3, dtype=img.dtype)
    mshift2.view(-1)[torch.arange(12) * 27 + idx_shift2[:, 0] * 9
                     + idx_shift2[:, 1] * 3 + idx_shift2[:, 2]] = 1
    rpad1 = nn.ReplicationPad3d(dilation)
    rpad2 = nn.ReplicationPad3d(radius)
    ssd = F.avg_pool3d(rpad2((F.conv3d(rpad1(img), mshift1, dilation=dilation)
                              - F.conv3d(rpad1(img), mshift2, dilation=dilation))
                             ** 2), kernel_size, stride=1)
    mind = ssd - torch.min(ssd, 1, keepdim=True)[0]
    mind_var = torch.mean(mind, 1, keepdim=True)
    mind_var = torch.clamp(mind_var, mind_var.mean().item() * 0.001,
                           mind_var.mean().item() * 1000)
    mind = mind / mind_var
    mind = torch.exp(-mind)
    mind = mind[:, torch.Tensor([6, 8, 1, 11, 2, 10, 0, 7, 9, 4, 5, 3]).long(), :, :, :]
    return mind


# --------------------------------------------------------------------------
# measurement (child process)
# --------------------------------------------------------------------------


def run_one(op, size_str, threads):
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:
        pass
    torch.set_grad_enabled(False)
    torch.manual_seed(1234)

    shape = parse_size(size_str)
    f32 = torch.float32
    a = torch.rand((1, 1) + shape, dtype=f32)
    b = torch.rand((1, 1) + shape, dtype=f32)

    def fwd_bwd(loss_fn):
        a_leaf = a.clone().requires_grad_(True)
        b_leaf = b.clone().requires_grad_(True)

        def fn():
            a_leaf.grad = None
            b_leaf.grad = None
            with torch.enable_grad():
                loss_fn(a_leaf, b_leaf).backward()
            return a_leaf.grad, b_leaf.grad

        return fn

    if op == "lncc_fwd":
        def fn():
            return local_ncc(a, b, 9).item()
    elif op == "lncc_fwd_bwd":
        fn = fwd_bwd(lambda x, y: local_ncc(x, y, 9))
    elif op == "mi_fwd":
        def fn():
            return mi_loss(a, b).item()
    elif op == "mi_fwd_bwd":
        fn = fwd_bwd(mi_loss)
    elif op == "mind_ssc_fwd":
        def fn():
            return mindssc(a, radius=1, dilation=2)
    else:
        raise ValueError(f"unknown op {op!r}")

    times = []
    for _ in range(WARMUP):
        t0 = time.perf_counter()
        fn()
        first = (time.perf_counter() - t0) * 1000.0
    if first > TIME_BUDGET_S * 1000.0 / 2:
        times.append(first)  # warm-up kept as the only sample
    start = time.perf_counter()
    while len(times) < MAX_RUNS and (not times or time.perf_counter() - start < TIME_BUDGET_S):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)

    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    rec = {
        "suite": "losses",
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
    ap.add_argument("--save", action="store_true",
                    help="also append to bench/results/pytorch.jsonl (atomically)")
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
    if "REGKIT_BENCH_SECONDS" in os.environ:
        cmd = "REGKIT_BENCH_SECONDS=%s %s" % (shlex.quote(os.environ["REGKIT_BENCH_SECONDS"]), cmd)
    lines = [json.dumps({"command": cmd})]
    print(lines[0], flush=True)

    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(args.threads)

    failures = 0
    script = os.path.abspath(__file__)
    for size in sizes:
        for op in ops:
            child = [sys.executable, script, "--one", op, size, "--threads", str(args.threads)]
            proc = subprocess.run(child, env=env, stdout=subprocess.PIPE, text=True)
            out = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("{")]
            if proc.returncode != 0 or not out:
                failures += 1
                print(f"pytorch_bench: {op} {size} failed (exit {proc.returncode})",
                      file=sys.stderr, flush=True)
                continue
            print(out[-1], flush=True)
            lines.append(out[-1])
    if args.save:
        path = os.path.join(os.path.dirname(script), "results", "pytorch.jsonl")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # append: earlier measurements stay (BENCHMARKS.md keeps the latest row per op and size)
        old = open(path).read() if os.path.exists(path) else ""
        with open(path + ".tmp", "w") as f:
            f.write(old + "\n".join(lines) + "\n")
        os.replace(path + ".tmp", path)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
