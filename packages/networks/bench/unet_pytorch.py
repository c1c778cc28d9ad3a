#!/usr/bin/python3
"""PyTorch twin of bench/unet.mjs: the VoxelMorph-size U-Net (the layers of @regkit/networks'
createUnet: 3x3(x3) convolutions with padding 1 and LeakyReLU(0.2), 2x max pooling after each
encoder level, nearest 2x upsampling and concatenation in the decoder, encoder [16, 32, 32, 32],
decoder [32, 32, 32, 32, 32, 16, 16], 2 input channels) at batch 1, 2D or 3D by the size:
  unet_fwd    one forward under torch.no_grad() (inference);
  unet_train  one training step: forward, loss mean(y^2), backward, Adam (lr 1e-4) step.
Each after one warm-up run at the measured size, then the median of 3 to 5 runs (5 while
within REGKIT_BENCH_SECONDS, default 20 s), as bench/unet.mjs. Threads: --threads (comma
list; "all" = every core), one child process per measurement so peak RSS is per measurement.
Prints JSON lines; --save appends them to bench/results/pytorch.jsonl.

    /usr/bin/python3 bench/unet_pytorch.py [--ops unet_fwd,unet_train] [--sizes 160x192x224]
        [--threads 1,all] [--save]
"""
import json
import os
import resource
import subprocess
import sys
import time

BUDGET_S = float(os.environ.get("REGKIT_BENCH_SECONDS", "20"))


def arg(name, default):
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


def build(ndim):
    import torch.nn as nn
    import torch.nn.functional as F

    Conv = nn.Conv3d if ndim == 3 else nn.Conv2d
    pool = F.max_pool3d if ndim == 3 else F.max_pool2d

    class Unet(nn.Module):
        def __init__(self, cin=2, enc=(16, 32, 32, 32), dec=(32, 32, 32, 32, 32, 16, 16)):
            super().__init__()
            self.enc = nn.ModuleList()
            prev, skips = cin, [cin]
            for nf in enc:
                self.enc.append(Conv(prev, nf, 3, padding=1))
                prev = nf
                skips.append(nf)
            skips.reverse()
            self.dec = nn.ModuleList()
            for l in range(len(enc)):
                self.dec.append(Conv(prev, dec[l], 3, padding=1))
                prev = dec[l] + skips[l]
            self.final = nn.ModuleList()
            for nf in dec[len(enc):]:
                self.final.append(Conv(prev, nf, 3, padding=1))
                prev = nf

        def forward(self, x):
            act = lambda t: F.leaky_relu(t, 0.2)
            history = [x]
            h = x
            for conv in self.enc:
                h = act(conv(h))
                history.append(h)
                h = pool(h, 2)
            for conv in self.dec:
                h = act(conv(h))
                h = torch.cat([F.interpolate(h, scale_factor=2, mode="nearest"), history.pop()], 1)
            for conv in self.final:
                h = act(conv(h))
            return h

    import torch
    return Unet()


def one(op, size, threads):
    import torch
    torch.set_num_threads(threads)
    spatial = [int(s) for s in size.split("x")]
    ndim = len(spatial)
    torch.manual_seed(1)
    net = build(ndim)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)

    def step(shape):
        x = torch.rand(1, 2, *shape)
        t0 = time.perf_counter()
        if op == "unet_fwd":
            with torch.no_grad():
                net(x)
        else:
            opt.zero_grad(set_to_none=True)
            loss = net(x).square().mean()
            loss.backward()
            opt.step()
            loss.item()
        return (time.perf_counter() - t0) * 1000

    net.eval() if op == "unet_fwd" else net.train()
    step(spatial)
    times, start = [], time.perf_counter()
    while len(times) < 5 and (len(times) < 3 or time.perf_counter() - start < BUDGET_S):
        times.append(step(spatial))
    times.sort()
    return {"suite": "networks", "impl": "pytorch", "backend": "torch-cpu", "threads": threads,
            "op": op, "size": size, "ms": round(times[len(times) // 2], 1), "runs": len(times),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "params": sum(p.numel() for p in net.parameters()), "torch": torch.__version__}


def main():
    if sys.argv[1:2] == ["--one"]:
        op, size, threads = sys.argv[2], sys.argv[3], int(sys.argv[4])
        print(json.dumps(one(op, size, threads)))
        return
    ops = arg("--ops", "unet_fwd").split(",")
    sizes = arg("--sizes", arg("--size", "160x192x224")).split(",")
    cores = os.cpu_count() or 1
    threads = [cores if t == "all" else int(t) for t in arg("--threads", "1").split(",")]
    lines = [json.dumps({"command": "/usr/bin/python3 packages/networks/bench/unet_pytorch.py " + " ".join(sys.argv[1:])})]
    print(lines[0], flush=True)
    for op in ops:
        for size in sizes:
            for t in threads:
                r = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", op, size, str(t)],
                                   capture_output=True, text=True)
                out = [l for l in r.stdout.splitlines() if l.startswith("{")]
                line = out[-1] if r.returncode == 0 and out else json.dumps(
                    {"suite": "networks", "impl": "pytorch", "op": op, "size": size, "threads": t,
                     "error": (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]})
                print(line, flush=True)
                lines.append(line)
    if "--save" in sys.argv:
        out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "pytorch.jsonl")
        with open(out, "a") as fh:
            fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
