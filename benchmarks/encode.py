"""Encoding throughput: each CPU inference path against eager fp32, measured in the same run on real tiles.

For the offline lite0-gem, the official architecture and EarthLoc2 (random weights for those two: speed does
not depend on them), it times every path of :mod:`earthloc.models.fast` on the same batch of real Sentinel-2
contexts (preprocessed to each model's input size beforehand, so this is model time), interleaving the paths
over the repeats so that load from other processes hits all of them alike, and keeps each path's best repeat.
It also checks each path's minimum cosine against eager fp32. The last lines printed are each model's
speed-up of the path ``auto`` picks. ``--record`` appends the figures to docs/benchmarks.md.

    .venv/bin/python -m benchmarks.encode [--repeats 3] [--batch 8] [--models earthloc,earthloc2] [--record]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from benchmarks._record import record
from earthloc.models.fast import make_runner, resolve_path
from earthloc.models.preprocess import load_image, to_tensor
from earthloc.models.registry import load_model
from earthloc.sources.iss_mini import IssMini


def _batch(model, n: int) -> torch.Tensor:
    files = sorted(c.path for c in IssMini.open().contexts())[:: 7][:n]  # the real context mosaics
    return torch.stack([to_tensor(load_image(f), prep=model.preprocessing) for f in files])


def bench_model(name: str, batch: int, repeats: int) -> tuple[dict[str, float], dict[str, float], str]:
    """Return (img/s per path, min cosine vs eager per path, the path auto picks)."""
    torch.manual_seed(0)
    model = load_model(name, pretrained=name.startswith("lite0"))
    x = _batch(model, batch)
    runners = {}
    for path in ("eager", "cl", "bf16", "ov", "ort"):
        used, run = make_runner(model, path)
        if used == path:  # skip paths this CPU cannot run (no bf16, no onnxruntime)
            runners[path] = run
    best = {p: float("inf") for p in runners}
    with torch.inference_mode():
        ref = runners["eager"](x)
        outs = {p: run(x) for p, run in runners.items()}  # warm-up (oneDNN/ORT kernel selection)
        for _ in range(repeats):
            for p, run in runners.items():
                t = time.perf_counter()
                run(x)
                best[p] = min(best[p], time.perf_counter() - t)
    speed = {p: batch / t for p, t in best.items()}
    cos = {p: float((outs[p] * ref).sum(-1).min()) for p in runners}
    return speed, cos, resolve_path(model, "auto")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--models", default="lite0-gem,earthloc,earthloc2", help="comma-separated model names")
    ap.add_argument("--record", action="store_true", help="append the figures to docs/benchmarks.md")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    figures, last = [], []
    for name in args.models.split(","):
        speed, cos, auto = bench_model(name, args.batch, args.repeats)
        for p in speed:
            print(f"{name:10s} {p:6s} {speed[p]:7.2f} img/s  x{speed[p] / speed['eager']:5.2f}  "
                  f"min cosine vs eager {cos[p]:.6f}")
        ratio = speed[auto] / speed["eager"]
        figures.append(f"{name}: eager fp32 {speed['eager']:.2f} img/s, auto={auto} {speed[auto]:.2f} img/s "
                       f"(x{ratio:.2f}, min cos {cos[auto]:.5f}); "
                       + ", ".join(f"{p} x{speed[p] / speed['eager']:.2f}" for p in speed if p not in ("eager", auto)))
        last.append(f"{name} speed-up ({auto} vs eager fp32): x{ratio:.2f}")
    figures.append(f"batch {args.batch}, {torch.get_num_threads()} threads, load avg {load:.1f} at start")
    if args.record:
        record("; ".join(figures))
    print("\n".join(last))


if __name__ == "__main__":
    main()
