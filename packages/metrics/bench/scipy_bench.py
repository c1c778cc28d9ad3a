#!/usr/bin/env python3
"""SciPy / NumPy reference timings for regkit's metrics (packages/metrics/bench/run.mjs).

Run with the system interpreter (Debian python3-numpy + python3-scipy):

    /usr/bin/python3 packages/metrics/bench/scipy_bench.py [--sizes 160x192x224]
        [--ops hd95,dice] [--save]

Every (op, size) measurement runs in its own subprocess (the script re-invokes
itself with ``--one OP SIZE``) so that the reported peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss``) belongs to that op alone (it includes
the Python + NumPy / SciPy baseline and the label-map construction).  Each
measurement does 1 warm-up run, then timed runs until 7 runs or
REGKIT_BENCH_SECONDS (default 20 s) have been spent, and reports the median;
when the warm-up alone exceeds half that budget it is the single sample
(runs = 1), as in run.mjs.  Single-threaded (scipy.ndimage is; BLAS thread
variables are set to 1).

Output: one JSON object per line on stdout.  The first line is
``{"command": "..."}``; then one line per measurement:

    {"suite":"metrics","impl":"scipy","backend":"numpy","threads":1,
     "op":"hd95","size":"160x192x224","ms":1234.5,"runs":7,"peak_rss_mb":250.1}

Label maps: the same deterministic formula as run.mjs (``label_maps``): 10
labels, argmax of 10 sums of 3 plane waves, b = a shifted by +2 voxels along
axis 0.  Labels scored = every label present in either map (computed inside
the timed region, as regkit does).

  * hd95: MONAI ``compute_hausdorff_distance(percentile=95, directed=False)``
    per label, as packages/metrics/test/fixtures/make_metric_fixtures.py:
    ``get_mask_edges`` (crop to the bounding box of A | B with margin 1,
    zero padded; edges = mask ^ scipy.ndimage.binary_erosion(mask)),
    ``scipy.ndimage.distance_transform_edt(~edges_other, sampling=spacing)``
    in both directions, numpy 95th percentile (linear), max of the two;
    spacing [1, 1, 1];
  * dice: 2 |A & B| / (|A| + |B|) per label with numpy boolean masks.
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

ALL_OPS = ["hd95", "dice"]
DEFAULT_SIZES = "160x192x224"
WARMUP = 1
MAX_RUNS = 7
TIME_BUDGET_S = float(os.environ.get("REGKIT_BENCH_SECONDS", "20"))
LABELS = 10
WAVES = 3


def parse_size(s):
    dims = tuple(int(x) for x in s.lower().split("x"))
    if len(dims) != 3 or any(d < 2 for d in dims):
        raise ValueError(f"bad size {s!r}: expected DxHxW with dims >= 2")
    return dims


def label_maps(shape):
    """The label maps of run.mjs's labelMaps (int32, C order)."""
    import numpy as np

    x0, x1, x2 = (np.arange(n, dtype=np.float64) for n in shape)
    x0 = x0[:, None, None]
    x1 = x1[None, :, None]
    x2 = x2[None, None, :]
    best = np.full(shape, -np.inf)
    a = np.zeros(shape, dtype=np.int32)
    for k in range(LABELS):
        f = np.zeros(shape)
        for j in range(WAVES):
            c = [(2 * math.pi * (1 + ((7 * k + 3 * j + 5 * ax) % 4) / 2)) / n
                 for ax, n in enumerate(shape)]
            f += np.sin(c[0] * x0 + c[1] * x1 + c[2] * x2 + (1.7 * k + 2.3 * j))
        better = f > best
        best[better] = f[better]
        a[better] = k
    b = np.empty_like(a)
    b[2:] = a[:-2]
    b[:2] = a[0]
    return a, b


# ------------------------------------------------------------- metrics ---

def mask_edges(seg_pred, seg_gt):
    """monai.metrics.utils.get_mask_edges(crop=True) (make_metric_fixtures.py)."""
    import numpy as np
    import scipy.ndimage

    or_vol = seg_pred | seg_gt
    if not or_vol.any():
        return np.zeros(seg_pred.shape, bool), np.zeros(seg_gt.shape, bool)
    nd = or_vol.ndim
    start, end = [], []
    for ax in range(nd):
        other = tuple(i for i in range(nd) if i != ax)
        idx = np.nonzero(or_vol.any(axis=other))[0]
        start.append(int(idx[0]) - 1)
        end.append(int(idx[-1]) + 1 + 1)
    box = tuple(e - s for s, e in zip(start, end))

    def crop_pad(x):
        out = np.zeros(box, dtype=bool)
        src = tuple(slice(max(s, 0), min(e, n)) for s, e, n in zip(start, end, x.shape))
        dst = tuple(slice(max(s, 0) - s, min(e, n) - s) for s, e, n in zip(start, end, x.shape))
        out[dst] = x[src]
        return out

    p, g = crop_pad(seg_pred), crop_pad(seg_gt)
    return scipy.ndimage.binary_erosion(p) ^ p, scipy.ndimage.binary_erosion(g) ^ g


def surface_distance(seg_pred, seg_gt, spacing):
    """monai.metrics.utils.get_surface_distance(distance_metric='euclidean')."""
    import numpy as np
    import scipy.ndimage

    if not seg_gt.any() or not seg_pred.any():
        return np.full(int(seg_pred.sum()), np.inf)
    dis = scipy.ndimage.distance_transform_edt(~seg_gt, sampling=spacing)
    return dis[seg_pred]


def hd95(a, b, spacing):
    import numpy as np

    out = []
    for l in np.union1d(np.unique(a), np.unique(b)):
        A = a == l
        B = b == l
        if not A.any() or not B.any():
            out.append(float("nan"))
            continue
        ea, eb = mask_edges(A, B)
        d1 = surface_distance(ea, eb, spacing)
        d2 = surface_distance(eb, ea, spacing)
        out.append(max(float(np.percentile(d1, 95)), float(np.percentile(d2, 95))))
    return out


def dice(a, b):
    import numpy as np

    out = []
    for l in np.union1d(np.unique(a), np.unique(b)):
        A = a == l
        B = b == l
        den = int(np.count_nonzero(A)) + int(np.count_nonzero(B))
        out.append(float("nan") if den == 0 else 2.0 * int(np.count_nonzero(A & B)) / den)
    return out


# --------------------------------------------------------------------------
# measurement (child process)
# --------------------------------------------------------------------------


def run_one(op, size_str):
    shape = parse_size(size_str)
    a, b = label_maps(shape)
    if op == "hd95":
        def fn():
            return hd95(a, b, [1.0, 1.0, 1.0])
    elif op == "dice":
        def fn():
            return dice(a, b)
    else:
        raise ValueError(f"unknown op {op!r}")

    times = []
    for _ in range(WARMUP):
        t0 = time.perf_counter()
        result = fn()
        first = (time.perf_counter() - t0) * 1000.0
    if first > TIME_BUDGET_S * 1000.0 / 2:
        times.append(first)  # warm-up kept as the only sample
    start = time.perf_counter()
    while len(times) < MAX_RUNS and (not times or time.perf_counter() - start < TIME_BUDGET_S):
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1000.0)

    print(f"{op}: {json.dumps([round(v, 6) for v in result])}", file=sys.stderr, flush=True)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    rec = {
        "suite": "metrics",
        "impl": "scipy",
        "backend": "numpy",
        "threads": 1,
        "op": op,
        "size": "x".join(str(n) for n in shape),
        "ms": round(statistics.median(times), 3),
        "runs": len(times),
        "peak_rss_mb": round(peak_kib / 1024.0, 1),
        "labels": len(result),
    }
    print(json.dumps(rec), flush=True)


# --------------------------------------------------------------------------
# driver (parent process)
# --------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default=DEFAULT_SIZES)
    ap.add_argument("--ops", default="all")
    ap.add_argument("--save", action="store_true",
                    help="also write bench/results/scipy.jsonl (atomically)")
    ap.add_argument("--one", nargs=2, metavar=("OP", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.one:
        run_one(args.one[0], args.one[1])
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
        env[k] = "1"

    failures = 0
    script = os.path.abspath(__file__)
    for size in sizes:
        for op in ops:
            proc = subprocess.run([sys.executable, script, "--one", op, size],
                                  env=env, stdout=subprocess.PIPE, text=True)
            out = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("{")]
            if proc.returncode != 0 or not out:
                failures += 1
                print(f"scipy_bench: {op} {size} failed (exit {proc.returncode})",
                      file=sys.stderr, flush=True)
                continue
            print(out[-1], flush=True)
            lines.append(out[-1])
    if args.save:
        path = os.path.join(os.path.dirname(script), "results", "scipy.jsonl")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(path + ".tmp", path)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
