"""BENCHMARKS.md from the suite's JSON files (``run_all.py``). Research use only - not for diagnosis."""

from __future__ import annotations

import json
from pathlib import Path


def _load(out: Path, name: str) -> dict | None:
    p = out / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def _ms(s: float) -> str:
    return f"{1000 * s:.1f} ms"


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


REPO = Path(__file__).resolve().parents[2]


def _cmd(d: dict) -> str:
    """The command, relative to the repository root (what to type there)."""
    return "`" + d["command"].replace(str(REPO) + "/", "") + "`"


def explain_section(d: dict) -> list[str]:
    r = d["rows"]
    L = ["## 1. Explain latency, 2D case", "",
         f"Command: {_cmd(d)}. One {d['size']} x {d['size']} 2D case, tiny architecture (explicit settings), "
         f"{d['fields']} clinical fields entered, {d['coalitions']} coalitions; one CPU thread; the rows timed side "
         f"by side in rounds (median of {d['repeats']} after a warm-up round; ratio = median over rounds of "
         "row / floor in the same round).", "",
         "| what | median | / floor |", "|---|---|---|"]
    names = {"floor": "floor: one forward + backward pass (eval mode, all gradients)",
             "predict": "predict: one forward pass", "gradcam": "Grad-CAM++ (includes the prediction)",
             "shapley": "exact Shapley, 10 fields (image encoded once, two-state decoder)",
             "shapley_before": "exact Shapley, before (model.decode per coalition row)",
             "explain": "**explain** as the pipeline runs it = Grad-CAM++ (its forward is the prediction) + Shapley on its image encoding",
             "explain_3pass": "explain with three encoder passes (predict + Grad-CAM++ + Shapley encoding again; the pipeline before)",
             "explain_before": "explain before the fix"}
    for k, label in names.items():
        L.append(f"| {label} | {_ms(r[k]['median_s'])} | {r[k]['ratio']:.2f}x |")
    L += ["", f"* Target explain <= 2.0x floor: as the pipeline runs it {r['explain']['ratio']:.2f}x "
          f"({_verdict(r['explain']['ratio'] <= 2.0)}); with three encoder passes "
          f"{r['explain_3pass']['ratio']:.2f}x.",
          f"* Fast decoder vs reference decode: Shapley values equal to {d['fast_vs_reference_max_abs']:.1e} "
          f"(max abs); Shapley {r['shapley_before']['median_s'] / r['shapley']['median_s']:.1f}x faster."]
    n = d.get("naive")
    if isinstance(n, dict):
        L += [f"* Naive pipeline (pytorch-grad-cam `GradCAMPlusPlus` + `shap.explainers.Exact` calling the full "
              f"model per coalition, removal = unknown): timed on {n['coalitions_timed']} coalitions "
              f"({n['fields_timed']} fields; median of {d['repeats']}) and extrapolated: "
              f"{n['extrapolated_s']:.2f} s; run once on all 10 fields: {n.get('full_10_fields_once_s', float('nan')):.2f} s.",
              f"* Target >= 100x faster than naive: explain {n['speedup_explain']:.0f}x "
              f"({_verdict(n['speedup_explain'] >= 100)}), with three encoder passes {n['speedup_explain_3pass']:.0f}x"
              f"; against the one full naive run "
              f"{n.get('speedup_explain_full', float('nan')):.0f}x."]
        if "shapley_vs_shap_max_abs" in d:
            L.append(f"* Same Shapley values as the naive pipeline: max abs difference "
                     f"{d['shapley_vs_shap_max_abs']:.1e} (target 1e-6: {_verdict(d['shapley_vs_shap_max_abs'] <= 1e-6)}); "
                     f"base value {d['shap_base_vs_ours']:.1e}.")
        if "heatmap_max_abs_diff" in d:
            L.append(f"* Same heatmap: ours (raw map, bilinear upsampling, min-max scaled as pytorch-grad-cam does) "
                     f"against pytorch-grad-cam's: max abs difference {d['heatmap_max_abs_diff']:.1e} on [0, 1].")
    return L + [""]


def _default_rows(d: dict) -> list[dict]:
    """The volume rows explained with the default feature budget (not the extra budget-0 row)."""
    return [r for r in d["rows"] if r.get("feature_budget_mib") is None]


def _chunk_row(d: dict) -> dict | None:
    """The row whose slice count equals the slice chunk (the largest volume explained in one pass)."""
    return next((r for r in _default_rows(d) if r["slices"] == d.get("slice_chunk")), None)


def _growth(d: dict, key: str = "peak_extra_mib", first: dict | None = None) -> float:
    """Growth per slice (MiB) of ``key`` from ``first`` (default: the one-chunk row) to the largest volume."""
    first, big = first or _chunk_row(d), max(_default_rows(d), key=lambda r: r["slices"])
    if not first or big["slices"] == first["slices"] or key not in big or key not in first:
        return float("nan")
    return (big[key] - first[key]) / (big["slices"] - first["slices"])


def _memory_verdict(d: dict) -> tuple[float, float, bool]:
    """(working-memory growth per slice between the two largest volumes, the input's MiB per slice, met):
    met when the explanation's own memory grows by less than one input slice per slice once the fixed
    budgets are full, i.e. it is bounded by the chunk and the budgets, not the volume."""
    rows = sorted((r for r in _default_rows(d) if "working_mib" in r), key=lambda r: r["slices"])
    if len(rows) < 2:
        return float("nan"), float("nan"), False
    growth = _growth(d, "working_mib", rows[-2])
    per_input_slice = rows[-1]["volume_mib"] / rows[-1]["slices"]
    return growth, per_input_slice, growth < per_input_slice


def _second_largest(d: dict) -> dict | None:
    rows = sorted(_default_rows(d), key=lambda r: r["slices"])
    return rows[-2] if len(rows) >= 2 else None


def _live(d: dict) -> str:
    return ", ".join(f"{r['live_working_mib']:.0f} MiB at {r['slices']}" for r in
                     sorted(_default_rows(d), key=lambda r: r["slices"]) if "live_working_mib" in r) + " slices"


def volume_section(d: dict) -> list[str]:
    L = ["## 2. Volumes", "", f"Command: {_cmd(d)}. One case of S slices at {d['size']} x {d['size']}, "
         f"slice_chunk {d['slice_chunk']}, {d['fields']} fields; a fresh process per size; one CPU thread. "
         f"Memory: {d['memory_method']}." + (f" Ratio: {d['ratio_method']}." if "ratio_method" in d else ""), "",
         "| slices | runs | Grad-CAM++ | Shapley | explain | per slice | single slice, same rounds | "
         "per slice / single slice | peak extra memory | of which results | working memory | "
         "working memory, live |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        single = _ms(r["single_slice_s"]) if "single_slice_s" in r else "-"
        res = f"{r['results_mib']:.0f} MiB | {r['working_mib']:.0f} MiB" if "working_mib" in r else "- | -"
        res += f" | {r['live_working_mib']:.0f} MiB" if "live_working_mib" in r else " | -"
        label = r["slices"] if r.get("feature_budget_mib") is None else \
            f"{r['slices']}, feature budget {r['feature_budget_mib']:g} MiB"
        L.append(f"| {label} | {r['repeats']} | {r['gradcam_s']:.2f} s | {r['shapley_s']:.2f} s | "
                 f"{r['explain_s']:.2f} s | {_ms(r['per_slice_s'])} | {single} | "
                 f"{r.get('per_slice_vs_single', float('nan')):.2f} | {r['peak_extra_mib']:.0f} MiB | {res} |")
    big = max(_default_rows(d), key=lambda r: r["slices"])
    at128 = next((r for r in _default_rows(d) if r["slices"] == 128), big)
    lean = next((r for r in d["rows"] if r.get("feature_budget_mib") is not None), None)
    growth, per_input, met = _memory_verdict(d)
    L += ["", f"* Target per-slice cost at {at128['slices']} slices <= a single slice's: "
          f"{at128.get('per_slice_vs_single', float('nan')):.2f}x "
          f"({_verdict(at128.get('per_slice_vs_single', 9) <= 1.0)})"
          + (f"; at {big['slices']} slices {big.get('per_slice_vs_single', float('nan')):.2f}x (past the feature "
             "budget the CNN runs twice for the slices beyond it)." if big is not at128 else "."),
          "* Target peak memory bounded by the slice chunk, not the volume: the working memory (peak extra "
          "memory minus what the explanation returns: Grad-CAM++ maps, per-slice cross-modal attention maps, "
          "the image tokens that the Shapley values and metrics reuse) grows until the two fixed budgets are "
          f"full (CNN feature maps kept between the passes: {d.get('feature_budget_mib', 64):.0f} MiB; "
          f"prepared Shapley terms: {d.get('prepared_budget_mib', 64):.0f} MiB), then changes by {growth:+.2f} MiB per "
          f"slice between the two largest volumes, against {per_input:.2f} MiB per slice of the input itself "
          f"({_verdict(met)}). The results grow by {_growth(d, 'results_mib'):.2f} MiB per slice: they are the "
          "explanation, and what a caller does not need it can drop (the pipeline keeps the maps on the "
          "patient's grid).",
          *([f"* The trade-off, side by side: with no feature maps kept (feature budget 0), {lean['slices']} slices "
             f"cost {lean.get('per_slice_vs_single', float('nan')):.2f}x a single slice per slice (the CNN runs "
             f"twice for all chunks but the last) with {lean['working_mib']:.0f} MiB working memory, against "
             f"{at128.get('per_slice_vs_single', float('nan')):.2f}x and {at128['working_mib']:.0f} MiB with the "
             "default budget."] if lean and "working_mib" in lean and "working_mib" in at128 else []),
          *([f"* Live (allocator returning freed blocks at once; the tensors the code holds): working memory "
             f"{_live(d)}; past the budgets {_growth(d, 'live_working_mib', _second_largest(d)):+.2f} MiB per slice."]
            if "live_working_mib" in big else []),
          "* Peak memory is the resident set size the operating system sees (glibc's allocator included); the input "
          f"volume itself ({big['volume_mib']:.0f} MiB at {big['slices']} slices) is in memory before the "
          "measurement starts.",
          "* Repeats: see `runs` (median over them)."]
    L += ["* How a volume is explained (`mmxai_core.explain.gradcam`, `GradCAMPlusPlusExplainer._from_features`): "
          "chunk by chunk, the CNN feature maps are computed without a graph (kept while they fit the feature "
          "budget); the transformer and the per-slice half of the decoder give each slice's embedding, with a "
          "graph for the last chunk only, and write tokens and attention maps straight into their result tensors; "
          "slice pooling and head on all embeddings give the case score and its gradient per slice embedding; "
          "every chunk but the last re-runs the encoder above the CNN (and the CNN, past the budget) with a graph "
          "for its vector-Jacobian product. A volume of one chunk is one forward and one backward pass. Shapley "
          "values decode the Grad-CAM++ pass's encoding a slice chunk at a time, the slice pooling accumulated "
          "over the chunks as a streaming softmax (`coalition_decoder.TwoStateDecoder`); with mean token pooling "
          "and no fusion feed-forward layer the fused tokens are never formed (`TwoStateFusion.pooled_mean`)."]
    if at128.get("per_slice_vs_single", 0) > 1.0:
        L += ["* Why the per-slice cost stays above a single slice's: past one chunk the encoder above the CNN "
              "runs twice for all chunks but the last (once without a graph for the case score, once with one for "
              "the gradient)."]
    L.append("")
    return L


def fields_section(d: dict) -> list[str]:
    L = ["## 3. Shapley cost against the number of fields", "",
         f"Command: {_cmd(d)}. 2D {d['size']} px case, exact (2^d coalitions) and the antithetic permutation "
         f"estimate ({d['permutations']} permutations), side by side; one CPU thread.", "",
         "| fields | coalitions | exact | per coalition | permutation | its rows | max abs error | / max abs value | within 2 SE |",
         "|---|---|---|---|---|---|---|---|---|"]
    for r in d["rows"]:
        L.append(f"| {r['d']} | {r['coalitions']} | {_ms(r['exact_s'])} | {r['exact_per_row_us']:.0f} us | "
                 f"{_ms(r['permutation_s'])} | {r['permutation_rows']} | {r['max_abs_error']:.1e} | "
                 f"{100 * r['relative_error']:.2f}% | {100 * r['within_2se']:.0f}% |")
    rows = d["rows"]
    cross = next((r["d"] for i, r in enumerate(rows)
                  if all(q["exact_s"] > q["permutation_s"] for q in rows[i:])), None)
    L += ["", f"* Exact stays slower than the 256-permutation estimate from d = {cross} fields on (below, both "
          "cost about the image encoding; the estimate evaluates about 256 (d - 1) coalitions, the exact "
          "computation 2^d)." if cross else
          "* Exact was never slower than the permutation estimate in the measured range.", ""]
    return L


def train_section(d: dict) -> list[str]:
    r = d["rows"]
    ratio = d["throughput_ratio_mmxai_vs_plain"]
    return ["## 4. Training throughput", "",
            f"Command: {_cmd(d)}. {d['cases']} in-memory 2D cases of {d['size']} px, batch {d['batch']}, same model, "
            "same augmentation; one epoch per round, side by side, one CPU thread.", "",
            "| loop | s / epoch | cases / s |", "|---|---|---|",
            *[f"| {k} | {v['median_s']:.2f} | {v['cases_per_s']:.1f} |" for k, v in r.items()], "",
            f"* Target mmxai-train loop >= 0.9x a plain loop: {ratio:.2f}x ({_verdict(ratio >= 0.9)}).",
            f"* The data pipeline alone (loader with augmentation and collation, no model) takes "
            f"{100 * d['data_share_of_mmxai_epoch']:.0f}% of an mmxai epoch: it is not the bottleneck. The loop's "
            f"own split of its last epoch: data {d['last_epoch_timings']['data_s']:.2f} s, model "
            f"{d['last_epoch_timings']['model_s']:.2f} s.", ""]


def click_section(d: dict) -> list[str]:
    L = ["## 5. Click to overlay (the worker)", "",
         f"Command: {_cmd(d)}. `python -m mmxai_core.worker request.json` in a fresh process per run, the shipped "
         f"demo model, {d['image']}, all fields entered, default options (coherence); median of {d['repeats']} "
         f"after a warm-up run; `default` and `before` alternate.", "",
         "| configuration | wall (start to exit) | start-up | work | started | load_model | read | preprocess | predict "
         "| Grad-CAM++ | Shapley | metrics | write | exit after result |", "|" + "---|" * 14]
    for name, m in d["median"].items():
        L.append(f"| {name} | {m['wall_s']:.2f} s | {m['startup_s']:.2f} s | {m['work_s']:.2f} s | {m['started_s']:.2f} s "
                 f"| {m['load_model']:.2f} s | {m['load']:.2f} s | {m['preprocess']:.2f} s | {m.get('predict', 0.0):.2f} s "
                 f"| {m['gradcam']:.2f} s | {m['shapley']:.2f} s | {m['metrics']:.2f} s | {m['write']:.2f} s "
                 f"| {m.get('exit_s', float('nan')):.2f} s |")
    imp = d.get("imports_us", {})
    L += ["", "* start-up = process start to the `started` event + `load_model` (importing torch and timm, "
          "reading the weights); work = the rest, up to the process's exit.",
          "* `before` = the worker before this benchmark's fixes: torch's default threads (2 here) and the "
          "interpreter's normal teardown after the result.",
          "* Cumulative import times in one run under `python -X importtime`: " +
          ", ".join(f"{k} {v / 1e6:.2f} s" for k, v in sorted(imp.items(), key=lambda kv: -kv[1])) + ".", ""]
    return L


def metrics_section(d: dict) -> list[str]:
    m = d["median_s"]
    L = ["## 6. Metric cost per case", "",
         f"Command: {_cmd(d)}. In one process, the demo model, a synthetic 128 x 128 2D case; `explain_case` with "
         f"stability and faithfulness; median of {d['repeats']} after a warm-up case; one CPU thread.", "",
         "| step | median |", "|---|---|", *[f"| {k} | {v:.3f} s |" for k, v in m.items()], "",
         "Parameters the metrics reported: " + "; ".join(
             f"{n}: " + ", ".join(f"{k}={v}" for k, v in list(p.items())[:12]) for n, p in d["parameters"].items()), ""]
    return L


def gpu_section(d: dict | None) -> list[str]:
    L = ["## 7. GPU", "",
         "`MMXAICore/benchmarks/gpu_bench.sh` (wrapper) runs `gpu_bench.py` on a CUDA machine with torch + timm "
         "and no install (PYTHONPATH=MMXAICore/src): a 2D case and a 64-slice volume at 256 x 256, fp32 and bf16 "
         "autocast, channels-last trunk, slices batched; prints a Markdown table (targets: a 2D case <= 50 ms, "
         "a 64-slice volume <= 1 s). The package accepts torch >= 2.1 (pyproject), so torch 2.11 is fine.", "",
         "**Not measured on a GPU**: this session was lent no GPU. The script was checked on the CPU with tiny "
         "settings (`--device cpu --tiny`) in this suite run:", ""]
    if d:
        from gpu_bench import table

        L += [f"Command: {_cmd(d['info'])} ({d['info']['seconds']:.0f} s).", "", table(d["rows"]), ""]
    return L


def write_report(out: Path, md: Path) -> None:
    suite = json.loads((out / "suite.json").read_text()) if (out / "suite.json").exists() else {}
    parts = {n: _load(out, n) for n in ("explain", "volume", "fields", "train", "click", "metrics")}
    machine = next((d["machine"] for d in parts.values() if d), {})
    L = ["# Benchmarks", "", "Research use only - not for diagnosis.", "",
         "Written by `make bench` (`MMXAICore/benchmarks/run_all.py`); the raw figures are in `out/bench/*.json`. "
         f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores, Python {machine.get('python')}, torch "
         f"{machine.get('torch')}; shared with other work while measured, so absolute times drift: the ratios "
         "were measured side by side in the same run. Every figure is the median of at least 5 runs after a "
         "warm-up unless its row says otherwise. Timings use ONE CPU thread: on this busy 2-core machine two "
         "threads made single operations up to 100x slower (section 5).",
         f"Suite wall time: {suite.get('total_s', 0) / 60:.1f} min"
         + (" (QUICK settings: a check of the suite, not figures)" if suite.get("quick") else "")
         + (f" (sum of each benchmark's latest run; re-run alone after the full suite: {', '.join(suite['rerun'])})"
            if suite.get("rerun") else "") + ".", ""]
    L += ["## Summary", "", "| target | figure | verdict |", "|---|---|---|"]
    e, v, t = parts["explain"], parts["volume"], parts["train"]
    if e:
        L.append(f"| explain 2D <= 2.0x fwd+bwd | {e['rows']['explain']['ratio']:.2f}x (pipeline) | "
                 f"{_verdict(e['rows']['explain']['ratio'] <= 2.0)} |")
        if isinstance(e.get("naive"), dict):
            n = e["naive"]
            L.append(f"| >= 100x faster than naive | {n['speedup_explain']:.0f}x | "
                     f"{_verdict(n['speedup_explain'] >= 100)} |")
        if "shapley_vs_shap_max_abs" in e:
            L.append(f"| same Shapley values as naive (1e-6) | {e['shapley_vs_shap_max_abs']:.1e} | "
                     f"{_verdict(e['shapley_vs_shap_max_abs'] <= 1e-6)} |")
    if v:
        big = next((r for r in _default_rows(v) if r["slices"] == 128), max(_default_rows(v), key=lambda r: r["slices"]))
        L.append(f"| per-slice cost at {big['slices']} slices <= single slice | {big.get('per_slice_vs_single', 0):.2f}x | "
                 f"{_verdict(big.get('per_slice_vs_single', 9) <= 1.0)} |")
        growth, per_input, met = _memory_verdict(v)
        L.append(f"| peak memory bounded by the slice chunk | working memory {growth:+.2f} MiB per slice past the "
                 f"fixed budgets (input: {per_input:.2f} MiB per slice); results +{_growth(v, 'results_mib'):.2f} "
                 f"MiB per slice | {_verdict(met)} |")
    if t:
        L.append(f"| training loop >= 0.9x plain | {t['throughput_ratio_mmxai_vs_plain']:.2f}x | "
                 f"{_verdict(t['throughput_ratio_mmxai_vs_plain'] >= 0.9)} |")
    L += ["| GPU: 2D <= 50 ms, 64 slices <= 1 s | not measured (no GPU lent) | unmeasured |", ""]
    for name, fn in (("explain", explain_section), ("volume", volume_section), ("fields", fields_section),
                     ("train", train_section), ("click", click_section), ("metrics", metrics_section)):
        if parts[name]:
            L += fn(parts[name])
    L += gpu_section(_load(out, "gpu_script_cpu_check"))
    notes = md.parent / "MMXAICore" / "benchmarks" / "NOTES.md"
    if notes.exists():
        L += [notes.read_text().strip(), ""]
    md.write_text("\n".join(L) + "\n", encoding="utf-8")
