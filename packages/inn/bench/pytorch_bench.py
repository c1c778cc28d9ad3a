"""PyTorch reference timings for bench/run.mjs: the same translator (squeeze, 8 coupling
blocks with LU 1x1 convolutions, DDWConv or plain dense-block subnets, growth 32, DDWConv
k 7, K 4, reduction 4) built from the reference ports in test/fixtures/make_inn_fixtures.py,
float32, one CPU thread.

    /usr/bin/python3 bench/pytorch_bench.py [--save] [--size 128]

Ops: translator_fwd_inv, translator_dense_fwd_inv (no_grad), translator_train_step
(forward, inverse, L1 terms, backward; no optimiser update). Median of 5 runs after one
warm-up. --save writes bench/results/pytorch.jsonl.
"""
import json
import os
import resource
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "test", "fixtures"))
import make_inn_fixtures as ref  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


def to32(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().float().requires_grad_(obj.requires_grad)
    if isinstance(obj, dict):
        return {k: to32(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to32(v) for v in obj)
    return obj


def translator(subnet):
    attention = {"k": 7, "mode": "mixture", "bases": 4, "reduction": 4}
    return [to32(ref.coupling_params(4, 2, 2, subnet, 32, attention)) for _ in range(8)]


def forward(blocks, x):
    z = ref.squeeze_first(x, 2)
    for p in blocks:
        z, _ = ref.coupling_apply(z, p)
    return ref.unsqueeze_first(z, 2)


def inverse(blocks, y):
    z = ref.squeeze_first(y, 2)
    for p in reversed(blocks):
        z, _ = ref.coupling_inverse(z, p)
    return ref.unsqueeze_first(z, 2)


def timed(fn, runs=5):
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return sorted(times)[len(times) // 2], runs


def main():
    size = int(sys.argv[sys.argv.index("--size") + 1]) if "--size" in sys.argv else 128
    torch.set_default_dtype(torch.float32)
    x = torch.rand(1, 1, size, size)
    y = torch.rand(1, 1, size, size)
    rows = [{"command": f"/usr/bin/python3 packages/inn/bench/pytorch_bench.py {' '.join(sys.argv[1:])}".strip()}]
    for op, subnet in (("translator_fwd_inv", "ddw"), ("translator_dense_fwd_inv", "dense"), ("translator_train_step", "ddw")):
        blocks = translator(subnet)
        if op == "translator_train_step":

            def step():
                fake = forward(blocks, x)
                recon = inverse(blocks, fake)
                loss = (fake - y).abs().mean() + 0.1 * (recon - x).abs().mean()
                leaves = [t for t in iter_tensors(blocks) if t.requires_grad]
                torch.autograd.grad(loss, leaves)

            ms, runs = timed(step)
        else:

            def run():
                with torch.no_grad():
                    inverse(blocks, forward(blocks, x))

            ms, runs = timed(run)
        rows.append(
            {
                "suite": "inn",
                "impl": "pytorch",
                "backend": "cpu",
                "threads": 1,
                "op": op,
                "size": f"{size}x{size}",
                "ms": round(ms, 3),
                "runs": runs,
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    if "--save" in sys.argv:
        os.makedirs(os.path.join(here, "results"), exist_ok=True)
        with open(os.path.join(here, "results", "pytorch.jsonl"), "w") as fh:
            fh.write("\n".join(json.dumps(r) for r in rows) + "\n")


def iter_tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from iter_tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from iter_tensors(v)


if __name__ == "__main__":
    main()
