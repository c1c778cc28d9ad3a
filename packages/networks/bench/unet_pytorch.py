#!/usr/bin/python3
"""PyTorch twin of bench/unet.mjs: forward pass of the VoxelMorph-size 3D U-Net (the layers of
@regkit/networks' createUnet: 3x3x3 convolutions with padding 1 and LeakyReLU(0.2), 2x max
pooling after each encoder level, nearest 2x upsampling and concatenation in the decoder,
encoder [16, 32, 32, 32], decoder [32, 32, 32, 32, 32, 16, 16], 2 input channels) at batch 1,
160x192x224, one thread, under torch.no_grad() (inference), after one warm-up at 32^3.
Prints a JSON line; --save writes bench/results/pytorch.jsonl.

    /usr/bin/python3 bench/unet_pytorch.py [--size 160x192x224] [--save]
"""
import json
import os
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(1)


class Unet(nn.Module):
    def __init__(self, cin=2, enc=(16, 32, 32, 32), dec=(32, 32, 32, 32, 32, 16, 16)):
        super().__init__()
        self.enc = nn.ModuleList()
        prev, skips = cin, [cin]
        for nf in enc:
            self.enc.append(nn.Conv3d(prev, nf, 3, padding=1))
            prev = nf
            skips.append(nf)
        skips.reverse()
        self.dec = nn.ModuleList()
        for l in range(len(enc)):
            self.dec.append(nn.Conv3d(prev, dec[l], 3, padding=1))
            prev = dec[l] + skips[l]
        self.final = nn.ModuleList()
        for nf in dec[len(enc):]:
            self.final.append(nn.Conv3d(prev, nf, 3, padding=1))
            prev = nf

    def forward(self, x):
        act = lambda t: F.leaky_relu(t, 0.2)
        history = [x]
        h = x
        for conv in self.enc:
            h = act(conv(h))
            history.append(h)
            h = F.max_pool3d(h, 2)
        for conv in self.dec:
            h = act(conv(h))
            h = torch.cat([F.interpolate(h, scale_factor=2, mode="nearest"), history.pop()], 1)
        for conv in self.final:
            h = act(conv(h))
        return h


def main():
    size = "160x192x224"
    if "--size" in sys.argv:
        size = sys.argv[sys.argv.index("--size") + 1]
    spatial = [int(s) for s in size.split("x")]
    torch.manual_seed(1)
    net = Unet().eval()
    with torch.no_grad():
        net(torch.rand(1, 2, 32, 32, 32))
        x = torch.rand(1, 2, *spatial)
        t0 = time.perf_counter()
        net(x)
        ms = (time.perf_counter() - t0) * 1000
    rec = {"suite": "networks", "impl": "pytorch", "backend": "torch-cpu", "threads": 1,
           "op": "unet_fwd", "size": size, "ms": round(ms, 1), "runs": 1,
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           "params": sum(p.numel() for p in net.parameters())}
    print(json.dumps(rec))
    if "--save" in sys.argv:
        out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "pytorch.jsonl")
        cmd = {"command": "/usr/bin/python3 packages/networks/bench/unet_pytorch.py " + " ".join(sys.argv[1:])}
        with open(out + ".tmp", "w") as fh:
            fh.write(json.dumps(cmd) + "\n" + json.dumps(rec) + "\n")
        os.replace(out + ".tmp", out)


if __name__ == "__main__":
    main()
