"""The ablation study behind ``mmxai-train --ablation``: model variants x training seeds on ONE split.

Research use, not for diagnosis.

    mmxai-train --ablation --manifest M.csv --schema S.yaml --out ABL_DIR \\
                [--variants attention,concat,image_only,clinical_only] [--seeds 0,1,2] [--jobs 2] [overrides]

    from mmxai_core.train.ablation import run_ablation
    result = run_ablation(cfg, "cohort/manifest.csv", "cohort/schema.yaml", "runs/ablation", jobs=2)
    result.summary["variants"][1]["comparison"]      # paired bootstrap of AUC vs attention

Every run is an ordinary :func:`~mmxai_core.train.run.run_training` run with ``model.variant`` and
``train.seed`` changed and everything else equal. The folder::

    ABL_DIR/ablation.json            settings, identity (config without variant/seed, data fingerprint),
                                     runs (status, epochs, timings, throughput), the summary, DeLong tests
    ABL_DIR/splits.json              the one split file every run uses (made once, or copied from --splits)
    ABL_DIR/cache/                   preprocessed images, filled once before the first run, shared by all
    ABL_DIR/runs/<variant>-s<seed>/  one run folder each (checkpoint, predictions, metrics, log)
    ABL_DIR/ablation.csv, .md        the table: per variant the mean over seeds of accuracy, sensitivity,
                                     specificity, F1 and AUC with a patient-bootstrap 95% CI of that mean and
                                     the SD over seeds; the paired-bootstrap AUC difference against the
                                     reference (attention) with its CI and p-value; (binary) DeLong's test
    ABL_DIR/ablation_bars.png        accuracy, AUC and F1 per variant with CI error bars (cf. the paper's Fig. 3)

Statistics (:func:`~mmxai_core.train.compare.ablation_summary`): all runs are scored on the same test
cases; a bootstrap resample draws test patients, and every run is re-scored on that same resample, so the
CI of a seed-mean and of a difference reflect test-set sampling with the seeds held fixed. The DeLong test
(second figure, binary only) compares the AUCs of the seed-averaged p(class 1) of each variant (a
3-seed ensemble) against the reference's; it treats cases as independent, so with several images per
patient prefer the paired patient bootstrap.

Re-running is cheap: a run folder that already holds a finished run of the same configuration and data is
reused, an interrupted one is continued with ``resume=True``; ``jobs`` > 1 trains that many runs at
once in separate processes (set ``train.threads`` so that jobs x threads fits the cores).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from mmxai_core import RESEARCH_USE_NOTICE
from mmxai_core.errors import MMXAIError

ABLATION_FORMAT = "mmxai.ablation"
DEFAULT_VARIANTS = ("attention", "concat", "image_only", "clinical_only")
DEFAULT_SEEDS = (0, 1, 2)
ABLATION_ENTRIES = ("ablation.json", "splits.json", "runs", "cache", "ablation.csv", "ablation.md",
                    "ablation_bars.png")
BAR_METRICS = ("accuracy", "auc", "f1")
Log = Callable[[str], None]


class AblationError(MMXAIError):
    """The ablation cannot run as asked (bad variant list, a folder holding another study, a failed run)."""


@dataclasses.dataclass
class AblationResult:
    """What :func:`run_ablation` produced: the summary (:func:`~mmxai_core.train.compare.ablation_summary`),
    DeLong tests (variant -> result, binary only), one entry per run, the files and timings."""

    out_dir: Path
    summary: dict[str, Any]
    delong: dict[str, Any]
    runs: list[dict[str, Any]]
    files: dict[str, Path]
    timings: dict[str, float]


# ---------------------------------------------------------------------------------------------- parsing
def parse_list(text: str | Sequence[Any] | None, what: str, cast: Callable[[str], Any] = str) -> list[Any]:
    """``"a,b"`` or a sequence -> a list without duplicates; AblationError naming ``what``."""
    if text is None:
        return []
    items = [t.strip() for t in text.split(",")] if isinstance(text, str) else [str(t).strip() for t in text]
    items = [t for t in items if t]
    out = []
    for t in items:
        try:
            value = cast(t)
        except ValueError:
            raise AblationError(f"{what}: {t!r} is not valid") from None
        if value in out:
            raise AblationError(f"{what}: {t!r} is listed twice")
        out.append(value)
    if not out:
        raise AblationError(f"{what}: nothing listed")
    return out


def check_variants(variants: Sequence[str], reference: str) -> list[str]:
    """Known variant names, with the reference among them."""
    from mmxai_core.model import list_variants

    known = list_variants()
    bad = [v for v in variants if v not in known]
    if bad:
        raise AblationError(f"--variants: unknown variant(s) {', '.join(bad)}; known: {', '.join(known)}")
    if reference not in variants:
        raise AblationError(f"--reference: {reference!r} is not among the variants {', '.join(variants)}")
    return list(variants)


def run_name(variant: str, seed: int) -> str:
    """Folder name of one run below ``runs/``."""
    return f"{variant}-s{seed}"


# ---------------------------------------------------------------------------------------------- one run
def _run_task(task: dict[str, Any]) -> dict[str, Any]:
    """Train one run (in this process or a worker process); returns {"status", "message"?, "timings"}."""
    from mmxai_core.data.manifest import load_manifest
    from mmxai_core.data.schema import ClinicalSchema
    from mmxai_core.train.config import resolve_config
    from mmxai_core.train.device import make_runtime
    from mmxai_core.train.run import run_training

    name = task["name"]
    log = task.get("log")
    if log is None:
        def log(text: str) -> None:
            print(f"[{name}] {text}", file=sys.stderr, flush=True)
    try:
        cfg = resolve_config(task["config"])
        manifest = task.get("manifest_obj")
        if manifest is None:
            # a spawned process does not inherit outside_paths_allowed(): the task says it explicitly
            manifest = load_manifest(task["manifest"], ClinicalSchema.from_dict(task["schema"]),
                                     allow_outside=bool(task.get("allow_outside", False)))
        rt = task.get("runtime") or make_runtime(cfg.train.device, cfg.train.amp, cfg.train.threads)
        result = run_training(cfg, manifest, None, task["out"], splits=task["splits"], resume=task["resume"],
                              runtime=rt, log=log)
        return {"status": result.status, "timings": dict(result.timings)}
    except MMXAIError as exc:
        return {"status": "error", "message": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}


def _run_info(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------- reading runs
def read_run(folder: Path, classes: list[str]) -> dict[str, Any]:
    """A finished run's test predictions and threshold, as an entry for ``ablation_summary``
    (``y_true``, ``probs``, ``patient_ids``, ``case_keys``, ``threshold``) plus its training log figures."""
    pred_file = folder / "predictions" / "test.csv"
    try:
        rows = list(csv.DictReader(pred_file.open(encoding="utf-8")))
        meta = json.loads((folder / "checkpoint" / "metadata.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AblationError(f"{folder}: cannot read the run's predictions or checkpoint ({exc})") from None
    index = {c: k for k, c in enumerate(classes)}
    y = np.asarray([index[r["label"]] for r in rows], dtype=np.int64)
    probs = np.asarray([[float(r[f"p_{c}"]) for c in classes] for r in rows], dtype=np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)  # undo the 8-digit rounding of the CSV
    thr = (meta.get("threshold") or {}).get("value")
    log_rows = []
    if (folder / "log.csv").is_file():
        log_rows = list(csv.DictReader((folder / "log.csv").open(encoding="utf-8")))

    def mean(key: str) -> float | None:
        vals = [float(r[key]) for r in log_rows if r.get(key)]
        return float(np.mean(vals)) if vals else None
    training = meta.get("training") or {}
    return {"y_true": y, "probs": probs, "patient_ids": np.asarray([r["patient_id"] for r in rows], dtype=object),
            "case_keys": [r["case"] for r in rows], "threshold": None if thr is None else float(thr),
            "epochs_run": training.get("epochs_run"), "best_epoch": training.get("best_epoch"),
            "cases_per_s": mean("cases_per_s"), "slices_per_s": mean("slices_per_s"),
            "epoch_s": mean("epoch_s"), "cam_scale": (meta.get("explain") or {}).get("cam_scale")}


def delong_against(runs: list[dict[str, Any]], reference: str) -> dict[str, Any]:
    """DeLong's test of each variant's seed-averaged p(class 1) against the reference's (binary only)."""
    from mmxai_core.train.compare import delong_test
    from mmxai_core.train.metrics import EvaluationError

    if not runs or runs[0]["probs"].shape[1] != 2:
        return {}
    by_variant: dict[str, list[np.ndarray]] = {}
    for r in runs:
        by_variant.setdefault(r["variant"], []).append(r["probs"][:, 1])
    y = runs[0]["y_true"]
    ref = np.mean(by_variant[reference], axis=0)
    out = {}
    for v, scores in by_variant.items():
        if v == reference:
            continue
        try:
            out[v] = {"reference": reference, "score": "seed-mean p(class 1)", "n_seeds": len(scores),
                      **delong_test(y, ref, np.mean(scores, axis=0))}
        except EvaluationError as exc:
            out[v] = {"reference": reference, "error": str(exc)}
    return out


def _delong_markdown(delong: dict[str, Any]) -> list[str]:
    if not delong:
        return []
    lines = ["", "## DeLong test (second figure)", "",
             "AUC of the seed-averaged p(class 1) of each variant (an ensemble of its seeds) against the "
             "reference's, DeLong et al. (1988); cases treated as independent.", "",
             "| variant | AUC (seed-mean score) | reference AUC | ΔAUC [95% CI] | z | p |", "|---|---|---|---|---|---|"]
    for v, d in delong.items():
        if "error" in d:
            lines.append(f"| {v} | n/a | n/a | {d['error']} | | |")
            continue
        p = "<0.001" if d["p_value"] < 0.001 else f"{d['p_value']:.3f}"
        lines.append(f"| {v} | {d['auc_b']:.3f} | {d['auc_a']:.3f} | {d['diff']:+.3f} [{d['ci_low']:.3f}, "
                     f"{d['ci_high']:.3f}] | {d['z']:.2f} | {p} |")
    return lines


def _runs_markdown(entries: list[dict[str, Any]]) -> list[str]:
    lines = ["", "## Runs", "", "| run | status | epochs (best) | test AUC | s/epoch | cases/s | slices/s |",
             "|---|---|---|---|---|---|---|"]
    for e in entries:
        def f(v: Any, d: int = 1) -> str:
            return "n/a" if v is None else f"{v:.{d}f}"
        lines.append(f"| {e['name']} | {e['status']} | {e.get('epochs_run')} ({e.get('best_epoch')}) | "
                     f"{f(e.get('test_auc'), 3)} | {f(e.get('epoch_s'))} | {f(e.get('cases_per_s'))} | "
                     f"{f(e.get('slices_per_s'))} |")
    return lines


# ---------------------------------------------------------------------------------------------- the study
def run_ablation(config: Any, manifest: Any, schema: Any = None, out_dir: str | os.PathLike = "ablation", *,
                 variants: Sequence[str] = DEFAULT_VARIANTS, seeds: Sequence[int] = DEFAULT_SEEDS,
                 reference: str = "attention", splits: Any = None, jobs: int = 1, resume: bool = False,
                 force: bool = False, runtime: Any = None, log: Log | None = None,
                 allow_outside: bool | None = None) -> AblationResult:
    """Train ``variants`` x ``seeds`` on one split and write the ablation table and figure.

    Args:
        config: the base :class:`~mmxai_core.train.config.TrainConfig` (``model.variant`` and ``train.seed``
            are set per run; ``data.cache_dir`` defaults to ``ABL_DIR/cache``).
        manifest, schema: as for :func:`~mmxai_core.train.run.run_training`.
        splits: a split file / Splits to use (copied to ``ABL_DIR/splits.json``); default: made once from
            ``data.val_fraction``, ``data.test_fraction`` and ``data.split_seed``.
        jobs: runs trained at once (separate processes; 1 = one after the other in this process).
        resume: continue interrupted runs; force: start the study over (removes only its own entries).
        allow_outside: accept manifest paths that leave the manifest's folder (``--allow-outside-paths``);
            None: what an enclosing :func:`~mmxai_core.data.manifest.outside_paths_allowed` says. Passed
            explicitly to every run, so that runs in spawned processes (``jobs`` > 1), which re-read the
            manifest and do not inherit that scoped switch, accept the same manifest.

    Raises:
        AblationError / MMXAIError (one line): bad lists, a folder holding a different study, a failed run.
    """
    from mmxai_core.data.clinical import ClinicalPreprocessor
    from mmxai_core.data.dataset import ImageStore
    from mmxai_core.data.manifest import _ALLOW_OUTSIDE, outside_paths_allowed
    from mmxai_core.data.splits import load_splits, make_splits, save_splits
    from mmxai_core.model import create_model
    from mmxai_core.report.plots import plot_metric_bars
    from mmxai_core.report.tables import to_jsonable, write_ablation_table
    from mmxai_core.train.device import make_runtime
    from mmxai_core.train.fingerprint import cohort_fingerprint, image_digests
    from mmxai_core.train.run import _check_splits, _load_inputs, build_model_config
    from mmxai_core.utils.atomic import write_json_atomic, write_text_atomic

    say = log or (lambda text: None)
    t_start = time.perf_counter()
    variants = check_variants(parse_list(variants, "--variants"), reference)
    seeds = parse_list(seeds, "--seeds", int)
    if int(jobs) < 1:
        raise AblationError(f"--jobs must be >= 1, got {jobs}")
    if resume and force:
        raise AblationError("--resume and --force exclude each other")
    rt = runtime or make_runtime(config.train.device, config.train.amp, config.train.threads)
    if rt.distributed and jobs > 1:
        raise AblationError("--jobs > 1 cannot be combined with torchrun; the runs go one after the other")
    main = rt.is_main_process
    out = Path(out_dir)
    if allow_outside is None:
        allow_outside = _ALLOW_OUTSIDE.get()
    with outside_paths_allowed(bool(allow_outside)):
        manifest_obj, schema_obj = _load_inputs(manifest, schema)
    classes = list(manifest_obj.classes)

    # ---- identity and the folder (read only)
    digests = image_digests([str(p) for p in manifest_obj.table["image"]], mode=config.data.fingerprint)
    cohort = cohort_fingerprint(manifest_obj, digests)
    base_cfg = config.replace(**{"model.variant": reference, "train.seed": 0})
    identity = {"manifest_sha256": cohort["sha256"], "config_sha256": base_cfg.fingerprint()}
    info_file = out / "ablation.json"
    if out.exists() and not out.is_dir():
        raise AblationError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        try:
            info = json.loads(info_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise AblationError(f"{out}: is not empty and holds no ablation study; choose another --out or pass "
                                "--force") from None
        if info.get("format") != ABLATION_FORMAT:
            raise AblationError(f"{info_file}: not an ablation file; choose another --out or pass --force")
        differs = [w for k, w in (("manifest_sha256", "data"), ("config_sha256", "configuration"))
                   if info.get(k) != identity[k]]
        if differs:
            raise AblationError(f"{out}: holds an ablation of a different {' and '.join(differs)}; choose another "
                                "--out or pass --force")

    # ---- splits: one for all runs
    own_splits = out / "splits.json"
    if own_splits.is_file() and not force:
        split_obj = load_splits(own_splits)
        if splits is not None:
            given = load_splits(splits) if isinstance(splits, (str, os.PathLike)) else splits
            if given.to_dict() != split_obj.to_dict():
                raise AblationError(f"{own_splits}: the study's splits differ from the split file given; all runs "
                                    "of a study share one split")
    elif splits is not None:
        split_obj = load_splits(splits) if isinstance(splits, (str, os.PathLike)) else splits
    else:
        split_obj = make_splits(manifest_obj, config.data.val_fraction, config.data.test_fraction,
                                seed=config.data.split_seed)
    index = split_obj.indices(manifest_obj)
    _check_splits(manifest_obj, index, split_obj.source or str(manifest_obj.path))
    fields = ClinicalPreprocessor(schema_obj).fit([manifest_obj.records[i] for i in index["train"]]).model_fields()
    uses_images = False
    for v in variants:  # configuration errors before any work
        probe = create_model(build_model_config(config.replace(**{"model.variant": v}), fields, len(classes)))
        uses_images = uses_images or probe.uses_image
        del probe

    # ---- from here on the folder is written
    rt.barrier()
    if force and main and out.is_dir():
        for name in ABLATION_ENTRIES:
            p = out / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    rt.barrier()
    cache_dir = Path(config.data.cache_dir) if config.data.cache_dir else out / "cache"
    settings = {"variants": variants, "seeds": seeds, "reference": reference, "jobs": int(jobs),
                "cache_dir": str(cache_dir), "splits": "splits.json", "base_config": base_cfg.to_dict()}
    info = {"format": ABLATION_FORMAT, "notice": RESEARCH_USE_NOTICE, **identity, "status": "running",
            "manifest": str(manifest_obj.path), "classes": classes, "settings": settings}
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(info_file, info)
        save_splits(split_obj, own_splits)
    rt.barrier()

    # ---- images: preprocess once into the shared cache (the runs then read it)
    timings: dict[str, float] = {}
    if uses_images and config.data.cache == "disk" and main:
        t0 = time.perf_counter()
        store = ImageStore(config.preprocess, cache_dir=cache_dir, digests=digests)
        names = {str(p): f"case {k}" for p, k in zip(manifest_obj.table["image"], manifest_obj.table["patient_id"])}
        stats = store.load(list(names), names=names, workers=config.data.preprocess_workers)
        store.flush()
        timings["preprocess_s"] = time.perf_counter() - t0
        say(f"images: {stats.computed} preprocessed, {stats.from_disk} already in the shared cache {cache_dir} "
            f"({timings['preprocess_s']:.1f} s)")
        del store
    rt.barrier()

    # ---- the runs (seed-major, so that partial results cover every variant)
    entries: list[dict[str, Any]] = []
    tasks: list[dict[str, Any]] = []
    for seed in seeds:
        for v in variants:
            name = run_name(v, seed)
            run_cfg = config.replace(**{"model.variant": v, "train.seed": seed, "data.cache_dir": str(cache_dir),
                                        **({"train.progress": "false"} if jobs > 1 else {})})
            folder = out / "runs" / name
            entry = {"name": name, "variant": v, "seed": seed, "run_dir": f"runs/{name}"}
            prior = _run_info(folder)
            if (prior is not None and prior.get("status") == "complete"
                    and prior.get("config_sha256") == run_cfg.fingerprint()
                    and prior.get("manifest_sha256") == identity["manifest_sha256"]):
                entry["status"] = "reused"
                say(f"{name}: finished earlier, reused")
            else:
                entry["status"] = "pending"
                tasks.append({"name": name, "config": run_cfg.to_dict(), "out": str(folder),
                              "splits": str(own_splits), "resume": bool(resume and prior is not None),
                              "manifest": str(manifest_obj.path), "schema": schema_obj.to_dict(),
                              "allow_outside": bool(allow_outside)})
            entries.append(entry)
    t0 = time.perf_counter()
    outcomes = _execute(tasks, jobs, rt, manifest_obj, say)
    timings["train_s"] = time.perf_counter() - t0
    failed = []
    for e in entries:
        o = outcomes.get(e["name"])
        if o is None:
            continue
        e["status"] = "trained" if o["status"] == "complete" else o["status"]
        e["train_timings"] = o.get("timings")
        if o["status"] != "complete":
            failed.append(f"{e['name']}: {o.get('message', o['status'])}")
    if failed:
        if main:
            write_json_atomic(info_file, {**info, "status": "failed", "runs": entries, "errors": failed})
        raise AblationError(f"{len(failed)} run(s) failed; first: {failed[0]}")

    # ---- the table, the DeLong tests, the figure (rank 0)
    runs = []
    for e in entries:
        r = read_run(out / e["run_dir"], classes)
        if runs and r["case_keys"] != runs[0]["case_keys"]:
            raise AblationError(f"{out / e['run_dir']}: its test cases differ from {runs[0]['variant']}'s; all runs "
                                "must share one split")
        r.update(variant=e["variant"], seed=e["seed"])
        runs.append(r)
        for key in ("epochs_run", "best_epoch", "cases_per_s", "slices_per_s", "epoch_s", "cam_scale"):
            e[key] = r[key]
    files: dict[str, Path] = {}
    summary: dict[str, Any] = {}
    delong: dict[str, Any] = {}
    if main:
        t0 = time.perf_counter()
        summary = write_ablation_table(runs, out / "ablation.csv", out / "ablation.md", reference=reference,
                                       n_boot=config.train.n_boot, seed=0)
        for e in entries:
            idx = [i for i, v in enumerate(summary["variants"]) if v["variant"] == e["variant"]][0]
            k = summary["variants"][idx]["seeds"].index(e["seed"])
            e["test_auc"] = summary["variants"][idx]["metrics"]["auc"]["per_seed"][k]
        delong = delong_against(runs, reference)
        md = (out / "ablation.md").read_text(encoding="utf-8").rstrip("\n").splitlines()
        md += _delong_markdown(delong) + _runs_markdown(entries)
        md += ["", f"Splits: `splits.json` (shared by all {len(runs)} runs); runs in `runs/<variant>-s<seed>/`."]
        write_text_atomic(out / "ablation.md", "\n".join(md) + "\n")
        n_seeds = len(seeds)
        plot_metric_bars(summary, out / "ablation_bars.png", metrics=BAR_METRICS,
                         title=f"Ablation: test metrics per variant (mean of {n_seeds} seed(s), 95% CI)")
        timings["summary_s"] = time.perf_counter() - t0
        timings["total_s"] = time.perf_counter() - t_start
        write_json_atomic(info_file, to_jsonable({**info, "status": "complete", "runs": entries, "summary": summary,
                                                  "delong": delong, "timings": timings}))
        files = {n: out / n for n in ("ablation.json", "splits.json", "ablation.csv", "ablation.md",
                                      "ablation_bars.png")}
    rt.barrier()
    return AblationResult(out, summary, delong, entries, files, timings)


def _execute(tasks: list[dict[str, Any]], jobs: int, rt: Any, manifest_obj: Any, say: Log) -> dict[str, dict]:
    """Run the tasks: in this process one after the other, or ``jobs`` at a time in spawned processes."""
    outcomes: dict[str, dict] = {}
    if not tasks:
        return outcomes
    if jobs <= 1 or len(tasks) == 1:
        for i, task in enumerate(tasks):
            say(f"run {i + 1}/{len(tasks)}: {task['name']}")
            name = task["name"]
            outcomes[name] = _run_task({**task, "runtime": rt, "manifest_obj": manifest_obj,
                                        "log": lambda text, n=name: say(f"[{n}] {text}")})
            if outcomes[name]["status"] == "error":
                break
        return outcomes
    import concurrent.futures as cf
    import multiprocessing as mp

    say(f"{len(tasks)} run(s), {jobs} at a time in separate processes")
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_run_task, task): task["name"] for task in tasks}
        for fut in cf.as_completed(futures):
            name = futures[fut]
            outcomes[name] = fut.result()
            say(f"{name}: {outcomes[name]['status']}")
    return outcomes


def table_lines(result: AblationResult) -> list[str]:
    """Printable lines: per variant the test AUC (mean over seeds, 95% CI) and the difference to the reference."""
    s = result.summary
    if not s:
        return []
    lines = [f"ablation: {s['n_cases']} test cases, {s['n_patients']} patients; AUC mean over seeds [95% CI], "
             f"difference to {s['reference']} (paired patient bootstrap)"]
    for v in s["variants"]:
        m = v["metrics"]["auc"]
        value = "n/a" if m["value"] is None else f"{m['value']:.3f}"
        ci = "" if m["ci_low"] is None else f" [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"
        c = v.get("comparison")
        if c and c.get("diff") is not None:
            p = c["p_value"]
            diff = (f"  diff {c['diff']:+.3f} [{c['ci_low']:.3f}, {c['ci_high']:.3f}], p "
                    f"{'<0.001' if p is not None and p < 0.001 else f'{p:.3f}'}")
        else:
            diff = "  (reference)" if c is None else ""
        lines.append(f"  {v['variant']:<14} AUC {value}{ci}{diff}")
    lines.append(f"table: {result.files.get('ablation.md')}; figure: {result.files.get('ablation_bars.png')}")
    return lines


__all__ = ["run_ablation", "AblationResult", "AblationError", "DEFAULT_VARIANTS", "DEFAULT_SEEDS", "read_run",
           "delong_against", "table_lines", "parse_list", "check_variants", "run_name"]
