#!/usr/bin/env python3
"""PyTorch reference timings for bench/conv.mjs: conv3d forward and forward + backward
(input and filter gradients, y.backward(dy)) of the same layers, single thread
(torch.set_num_threads(1)), float32, channels first (PyTorch's native layout).

'same' is PyTorch's padding=1 (stride 1: identical to TensorFlow's 'same'; stride 2: the
same output size and work, the padding split differs by one voxel from TensorFlow's).
One child process per measurement, so peak RSS is per measurement. Prints JSON lines
{"suite":"kernels","impl":"pytorch","backend":"cpu",...}.

    /usr/bin/python3 bench/conv_pytorch.py
    /usr/bin/python3 bench/conv_pytorch.py --sizes 1x64x64x64x8_k3_8to16 --ops conv3d_fwd
    /usr/bin/python3 bench/conv_pytorch.py --save   # also writes bench/results/conv_pytorch.jsonl
Each measurement: 1 warm-up, then runs until 7 runs or REGKIT_BENCH_SECONDS (default 20 s);
when the warm-up alone exceeds half that budget it is the single sample (runs = 1).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

# name -> (input shape NDHWC, Cout, stride); 3x3x3 filters, 'same' padding (as conv.mjs)
SIZES = {
    "1x64x64x64x8_k3_8to16": ([1, 64, 64, 64, 8], 16, 1),
    "1x160x192x224x2_k3_2to16_s2": ([1, 160, 192, 224, 2], 16, 2),
    "1x80x96x112x16_k3_16to32_s2": ([1, 80, 96, 112, 16], 32, 2),
    "1x40x48x56x32_k3_32to32_s2": ([1, 40, 48, 56, 32], 32, 2),
    "1x20x24x28x32_k3_32to32_s2": ([1, 20, 24, 28, 32], 32, 2),
    "1x160x192x224x48_k3_48to16": ([1, 160, 192, 224, 48], 16, 1),
}
OPS = ["conv3d_fwd", "conv3d_fwd_bwd"]


def one(op, size):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    torch.manual_seed(0)
    (b, d, h, w, ci), co, stride = SIZES[size]
    x = torch.rand(b, ci, d, h, w) * 2 - 1
    wt = (torch.rand(co, ci, 3, 3, 3) * 2 - 1) * 0.2
    with torch.no_grad():
        y_shape = F.conv3d(x[:, :, :4, :4, :4], wt, stride=stride, padding=1).shape
    out = [b, co] + [-(-s // stride) for s in (d, h, w)]
    dy = torch.rand(*out) * 2 - 1
    assert y_shape[:2] == tuple(out[:2])

    def fwd():
        with torch.no_grad():
            return F.conv3d(x, wt, stride=stride, padding=1)

    def fwd_bwd():
        xg = x.detach().requires_grad_(True)
        wg = wt.detach().requires_grad_(True)
        y = F.conv3d(xg, wg, stride=stride, padding=1)
        y.backward(dy)
        return xg.grad, wg.grad

    fn = fwd if op == "conv3d_fwd" else fwd_bwd

    def run():
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1000

    budget = float(os.environ.get("REGKIT_BENCH_SECONDS", 20)) * 1000
    first = run()
    times = [first] if first > budget / 2 else []
    start = time.perf_counter()
    while len(times) < 7 and (len(times) < 1 or (time.perf_counter() - start) * 1000 < budget):
        times.append(run())
    times.sort()
    return {
        "suite": "kernels",
        "impl": "pytorch",
        "backend": "cpu",
        "threads": 1,
        "op": op,
        "size": size,
        "ms": round(times[len(times) // 2], 3),
        "runs": len(times),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "torch": torch.__version__,
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default=",".join(SIZES))
    p.add_argument("--ops", default=",".join(OPS))
    p.add_argument("--one", nargs=2, metavar=("OP", "SIZE"))
    p.add_argument("--save", action="store_true", help="also append to bench/results/conv_pytorch.jsonl")
    a = p.parse_args()
    saved = [json.dumps({"command": "/usr/bin/python3 packages/kernels/bench/conv_pytorch.py "
                         + " ".join(sys.argv[1:])})]
    if a.one:
        print(json.dumps(one(*a.one)))
        return
    for size in a.sizes.split(","):
        if size not in SIZES:
            sys.exit(f"unknown size {size}")
        for op in a.ops.split(","):
            r = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--one", op, size],
                capture_output=True,
                text=True,
            )
            lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
            if r.returncode != 0 or not lines:
                why = " | ".join(r.stderr.strip().splitlines()[-3:])
                line = json.dumps(
                    {"suite": "kernels", "impl": "pytorch", "backend": "cpu", "op": op,
                     "size": size, "error": why or f"exit {r.returncode}"}
                )
            else:
                line = lines[-1]
            print(line, flush=True)
            saved.append(line)
    if a.save:
        out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                           "conv_pytorch.jsonl")
        # append: earlier measurements stay (BENCHMARKS.md keeps the latest row per op and size)
        old = open(out).read() if os.path.exists(out) else ""
        with open(out + ".tmp", "w") as fh:
            fh.write(old + "\n".join(saved) + "\n")
        os.replace(out + ".tmp", out)


if __name__ == "__main__":
    main()
