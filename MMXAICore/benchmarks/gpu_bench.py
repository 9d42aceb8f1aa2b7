"""The suite's model and explanation parts on a CUDA machine, on synthetic in-memory tensors (research use).

    python MMXAICore/benchmarks/gpu_bench.py [--device cuda] [--size 256] [--slices 64] [--repeats 5]
                                            [--tiny] [--json out.json]

Needs only torch, timm and numpy next to ``MMXAICore/src`` (``gpu_bench.sh`` puts it on PYTHONPATH: no
install, no network). Rows (median of ``--repeats`` after warm-up, the device synchronised around each
call), each in fp32 and, where the device supports it, bf16 autocast; channels-last for the CNN trunk:

* 2D case (``--size`` px, 10 clinical fields): forward; forward + backward (the floor); Grad-CAM++;
  exact Shapley values (1,024 coalitions); explain = Grad-CAM++ + Shapley (targets: <= 50 ms, and the
  ratio to the floor);
* volume (``--slices`` x ``--size`` x ``--size``): forward with all slices batched; Grad-CAM++
  (slices in chunks of slice_chunk); Shapley; explain (target <= 1 s for 64 slices);
* bf16 rows report the largest difference of the Shapley values from fp32 (bf16 is not exact: the
  exact figures are the fp32 rows).

``--tiny`` shrinks everything (64 px, 4 slices, 2 repeats) to check the script on a CPU
(``--device cpu --tiny``). Prints a Markdown table. Research use only - not for diagnosis.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import FIELDS10, VALUES10, bench_model  # noqa: E402


def _timed(fn, repeats: int, warmup: int, device: torch.device) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(device: torch.device, size: int, slices: int, repeats: int, warmup: int) -> list[dict]:
    from mmxai_core.explain.gradcam import GradCAMPlusPlusExplainer
    from mmxai_core.explain.shapley import clinical_shapley

    model = bench_model(FIELDS10, size).to(device)
    model.image_encoder.trunk.to(memory_format=torch.channels_last)
    values = torch.as_tensor(VALUES10, device=device)[None]
    missing = torch.zeros(1, 10, dtype=torch.bool, device=device)
    gen = torch.Generator().manual_seed(0)
    cases = {"2d": torch.randn(1, 1, 1, size, size, generator=gen).to(device),
             f"volume{slices}": torch.randn(1, slices, 1, size, size, generator=gen).to(device)}
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    precisions = ["fp32"] + (["bf16"] if bf16 else [])
    rows, ref_phi = [], {}
    for case, x in cases.items():
        for prec in precisions:
            amp = (torch.autocast(device.type, dtype=torch.bfloat16) if prec == "bf16"
                   else contextlib.nullcontext())

            def forward():
                with amp, torch.inference_mode():
                    model(x, None, None, values, missing)

            def floor():
                model.zero_grad(set_to_none=True)
                with amp:
                    out = model(x, None, None, values, missing)
                out.logits[0, 1].float().backward()

            def gradcam():
                with amp, GradCAMPlusPlusExplainer(model) as cam:
                    return cam(x, values, missing, target_class=1)

            def shapley():
                with amp:
                    return clinical_shapley(model, x, values, missing)

            def explain():
                return gradcam(), shapley()

            row = {"case": case, "precision": prec, "slices": int(x.shape[1]), "size": size}
            for name, fn in (("forward", forward), ("floor", floor), ("gradcam", gradcam), ("shapley", shapley),
                             ("explain", explain)):
                row[f"{name}_ms"] = 1000 * _timed(fn, repeats, warmup, device)
            model.zero_grad(set_to_none=True)
            phi = shapley().values
            if prec == "fp32":
                ref_phi[case] = phi
            row["shapley_max_diff_vs_fp32"] = float(np.abs(phi - ref_phi[case]).max())
            row["explain_vs_floor"] = row["explain_ms"] / row["floor_ms"]
            rows.append(row)
            print(f"{case:10s} {prec}: " + "  ".join(f"{k[:-3]} {v:.1f} ms" for k, v in row.items() if k.endswith("_ms")),
                  flush=True)
    return rows


def table(rows: list[dict]) -> str:
    head = ("| case | precision | forward | fwd+bwd (floor) | Grad-CAM++ | Shapley (1,024) | explain | explain / floor "
            "| Shapley vs fp32 |\n|---|---|---|---|---|---|---|---|---|\n")
    return head + "\n".join(
        f"| {r['case']} | {r['precision']} | {r['forward_ms']:.1f} ms | {r['floor_ms']:.1f} ms | {r['gradcam_ms']:.1f} ms "
        f"| {r['shapley_ms']:.1f} ms | {r['explain_ms']:.1f} ms | {r['explain_vs_floor']:.2f}x "
        f"| {r['shapley_max_diff_vs_fp32']:.1e} |" for r in rows)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--slices", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--tiny", action="store_true", help="64 px, 4 slices, 2 repeats (a CPU check of the script)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.tiny:
        args.size, args.slices, args.repeats, args.warmup = 64, 4, 2, 1
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_bench: CUDA is not available (use --device cpu --tiny to check the script)")
    t0 = time.perf_counter()
    rows = run(device, args.size, args.slices, args.repeats, args.warmup)
    info = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "python": platform.python_version(), "seconds": time.perf_counter() - t0,
            "command": " ".join(["python", *sys.argv])}
    print(f"\n{info['device']}, torch {info['torch']}, {info['seconds']:.0f} s\n")
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"info": info, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
