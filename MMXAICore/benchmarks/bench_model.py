"""Time the model: forward and forward+backward of a preset on a 2D case and a volume.

    python MMXAICore/benchmarks/bench_model.py [--preset tiny] [--size 128] [--slices 32] [--threads 2]
                                              [--repeats 5] [--device cpu] [--json out.json]

Reports the median of ``--repeats`` timed runs after warm-up, and the parameter count. The clinical part
is 6 numeric + 4 categorical fields (the size of a typical schema). Research use, not for diagnosis.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from mmxai_core.model import create_model, model_config

FIELDS = [(f"num{i}", "numeric", 0) for i in range(6)] + [(f"cat{i}", "categorical", 3) for i in range(4)]


def _median_ms(fn, repeats: int, warmup: int, sync) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def bench(preset: str, size: int, slices: int, repeats: int, warmup: int, device: str) -> dict:
    config = model_config(preset, clinical_fields=FIELDS)
    model = create_model(config, seed=0).to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    values = torch.zeros(1, len(FIELDS), device=device)
    missing = torch.zeros(1, len(FIELDS), dtype=torch.bool, device=device)
    result = {"preset": preset, "device": device, "threads": torch.get_num_threads(),
              "parameters": sum(p.numel() for p in model.parameters()), "size": size,
              "torch": torch.__version__, "cpu": platform.processor() or platform.machine()}
    for name, s in (("2d", 1), (f"volume{slices}", slices)):
        images = torch.randn(1, s, 1, size, size, device=device)

        def forward():
            with torch.no_grad():
                model(images, None, None, values, missing)

        def forward_backward():
            model.zero_grad(set_to_none=True)
            model(images, None, None, values, missing).logits.sum().backward()

        model.eval()
        result[f"{name}_forward_ms"] = round(_median_ms(forward, repeats, warmup, sync), 1)
        model.train()
        result[f"{name}_forward_backward_ms"] = round(_median_ms(forward_backward, repeats, warmup, sync), 1)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--slices", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = bench(args.preset, args.size, args.slices, args.repeats, args.warmup, args.device)
    for key, value in result.items():
        print(f"{key:32s} {value}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
