"""MMXAISlicerLogic: one case from an input volume node to result nodes. No Qt; the MRML scene is passed in.

Flow of a run::

    checks (volume, checkpoint, clinical values; nothing touched yet)
    -> private temporary folder: input.nrrd written by a storage node (oblique geometry kept), request.json
    -> worker process ``<python> -m mmxai_core.worker request.json`` (non-blocking; lines -> events)
    -> on the ``result`` event + exit 0: result files read into memory and checked (heatmaps on the input's
       grid) -> output nodes created or updated in one go -> temporary folder removed

The temporary folder is removed on success, error and cancel. Output nodes are only touched once everything
has been read and checked, and nodes a failed attempt added are removed again: nothing half-made stays in
the scene. The input node is never modified (its storage node is not used; a separate one writes the file).

``run()`` blocks until the case is done (scripts, tests, the self-test); ``start()`` returns a
:class:`RunJob` at once and the panel polls it from a GUI timer.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import NOTICE, core, nodes
from .checkpoint import CheckpointInfo, CheckpointInfoError, read_checkpoint_info
from .results import CaseResult, ResultError, format_result_text, read_result
from .runner import PopenRunner, Runner, WorkerStartError

DEVICES = ("auto", "cpu", "cuda", "mps")
_OOM_RE = re.compile(r"out of memory|OutOfMemoryError|MemoryError|std::bad_alloc|cannot allocate memory",
                     re.IGNORECASE)
_LOG_KEEP = 200


class RunError(Exception):
    """A run could not start or did not finish; ``str()`` is a plain-words message for the panel.

    ``kind``: input | checkpoint | clinical | start | worker | crash | killed | oom | result | cancelled | busy
    (``killed``: ended by SIGKILL, whoever sent it; ``oom``: the worker's own output reported lack of memory).
    """

    def __init__(self, message: str, kind: str = "input", details: str = ""):
        super().__init__(message)
        self.kind = kind
        self.details = details


@dataclass
class RunOutputs:
    """What a finished run left in the scene (nodes by role) and its result."""

    result: CaseResult
    nodes: dict[str, Any]
    text: str
    note: str = ""

    @property
    def label_node(self):
        return self.nodes.get(nodes.ROLE_LABEL)

    @property
    def heatmap_node(self):
        return self.nodes.get(nodes.ROLE_HEATMAP)

    @property
    def table_node(self):
        return self.nodes.get(nodes.ROLE_TABLE)

    @property
    def chart_node(self):
        return self.nodes.get(nodes.ROLE_CHART)


EventCallback = Callable[[dict], None]


class RunJob:
    """One worker run in progress. Events go to ``on_event`` (on the thread that calls :meth:`poll`, or on
    the GUI thread for Slicer's runners): ``{"type": "started"|"progress"|"log"|"finished"}``."""

    def __init__(self, logic: "MMXAISlicerLogic", volume, info: CheckpointInfo, workdir: Path,
                 runner: Runner, on_event: EventCallback | None):
        self.logic, self.volume, self.info, self.workdir, self.runner = logic, volume, info, workdir, runner
        self.on_event = on_event
        self.state = "running"
        self.fraction = 0.0
        self.message = "starting the worker"
        self.log: list[str] = []
        self.outputs: RunOutputs | None = None
        self.error: RunError | None = None
        self._result_event: dict | None = None
        self._error_event: dict | None = None
        self._protocol_problem: str | None = None
        self.started_at = time.monotonic()

    # ---------------------------------------------------------------------------------------- state
    @property
    def finished(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled")

    def poll(self, timeout: float = 0.0) -> None:
        self.runner.poll(timeout)

    def cancel(self) -> None:
        """Kill the worker (and its children); the temporary folder is removed; nothing is added."""
        if self.finished:
            return
        self.state = "cancelled"
        self.error = RunError("Cancelled.", kind="cancelled")
        try:
            self.runner.cancel()
        finally:
            self.logic._cleanup(self.workdir)
            self._emit({"type": "finished", "state": self.state, "error": self.error})

    # ------------------------------------------------------------------------------ worker output
    def _emit(self, event: dict) -> None:
        if self.on_event:
            self.on_event(event)

    def handle_line(self, line: str) -> None:
        if self.finished:
            return
        from mmxai_core.worker.protocol import ProtocolError, parse_line

        try:
            event = parse_line(line)
        except ProtocolError as exc:
            self._protocol_problem = str(exc)
            event = None
        if event is None:
            self.log.append(line)
            del self.log[:-_LOG_KEEP]
            self._emit({"type": "log", "line": line})
            return
        kind = event.get("event")
        if kind == "started":
            self._emit({"type": "started", "pid": event.get("pid")})
        elif kind == "progress":
            frac = event.get("fraction")
            if isinstance(frac, (int, float)) and not isinstance(frac, bool) and math.isfinite(frac):
                self.fraction = min(1.0, max(0.0, float(frac)))
            self.message = str(event.get("message") or event.get("step") or "")
            self._emit({"type": "progress", "fraction": self.fraction, "message": self.message,
                        "step": event.get("step")})
        elif kind == "result":
            self._result_event = event
        elif kind == "error":
            self._error_event = event

    def handle_finished(self, returncode: int) -> None:
        if self.finished:  # cancelled: the folder is already gone
            self.logic._cleanup(self.workdir)
            return
        try:
            if self._result_event is not None and returncode == 0:
                self.outputs = self.logic._apply_result(self)
                self.state = "succeeded"
            else:
                self.error = self._failure(returncode)
                self.state = "failed"
        except RunError as exc:
            self.error, self.state = exc, "failed"
        except Exception as exc:  # noqa: BLE001 - shown in plain words, never a half-made scene
            self.error = RunError(f"The results could not be loaded: {exc}", kind="result")
            self.state = "failed"
        finally:
            self.logic._cleanup(self.workdir)
        self._emit({"type": "finished", "state": self.state, "error": self.error, "outputs": self.outputs})

    def _failure(self, rc: int) -> RunError:
        tail = "\n".join(self.log[-20:])
        oom = any(_OOM_RE.search(x) for x in self.log[-50:])
        if self._error_event is not None:
            msg = str(self._error_event.get("message") or "unknown error")
            if self._error_event.get("kind") == "input" and not oom:
                return RunError(f"The model could not use this input: {msg}", kind="input", details=tail)
            if oom or _OOM_RE.search(msg):
                return RunError(_oom_text(msg), kind="oom", details=tail)
            return RunError(f"The worker failed: {msg}", kind="worker", details=tail)
        if oom:
            return RunError(_oom_text(""), kind="oom", details=tail)
        if rc in (-9, 137):
            # SIGKILL says nothing about who sent it: the kernel's out-of-memory killer, a user, a watchdog
            return RunError("The worker was stopped by signal 9 (SIGKILL), e.g. by the system's out-of-memory "
                            "killer or by a user; nothing was added to the scene. If memory was short, choose "
                            "CPU, use a smaller volume or close other programs, and run again.",
                            kind="killed", details=tail)
        if self._protocol_problem:
            return RunError(f"The worker's output could not be understood: {self._protocol_problem}",
                            kind="crash", details=tail)
        if self._result_event is not None:
            return RunError(f"The worker reported a result but exited with status {rc}.", kind="crash",
                            details=tail)
        last = next((x for x in reversed(self.log) if x.strip()), "")
        hint = f" Last output: {last[:300]}" if last else ""
        return RunError(f"The worker stopped unexpectedly (exit status {rc}) without a result.{hint}",
                        kind="crash", details=tail)


def _oom_text(msg: str) -> str:
    base = ("The worker ran out of memory. Choose CPU as the device (or free GPU memory) and run again; "
            "a smaller volume also helps.")
    return base + (f" ({msg})" if msg else "")


class MMXAISlicerLogic:
    """Run the MMXAI worker on a volume node of ``scene`` and put the results into the scene.

    Attributes you may set: ``worker_command`` (list, the request path is appended; default
    ``[PythonSlicer or $MMXAI_WORKER_PYTHON, "-m", "mmxai_core.worker"]``), ``worker_env`` (extra environment
    variables), ``temp_root`` (where private temporary folders are made), ``runner_factory``.
    """

    def __init__(self, scene, worker_command: list[str] | None = None, worker_env: dict[str, str] | None = None,
                 temp_root: str | os.PathLike | None = None, runner_factory: Callable[[], Runner] = PopenRunner):
        self.scene = scene
        self.worker_command = list(worker_command) if worker_command else core.worker_command()
        self.worker_env = dict(worker_env or {})
        self.temp_root = temp_root
        self.runner_factory = runner_factory
        self.current_job: RunJob | None = None

    # ------------------------------------------------------------------------------------- checks
    @staticmethod
    def check_volume(node) -> None:
        """RunError (plain words) when the node is not a single-component 3D (or 2D) image volume."""
        if node is None:
            raise RunError("Select an input volume first.", kind="input")
        name = node.GetName() if hasattr(node, "GetName") else "the input"
        if node.GetAttribute(nodes.ATTR_ROLE):
            raise RunError(f"'{name}' is an MMXAI output (a heatmap), not an image. Select the image volume.")
        if node.IsA("vtkMRMLLabelMapVolumeNode"):
            raise RunError(f"'{name}' is a labelmap (a segmentation), not an image. Select the image volume.")
        if not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLTensorVolumeNode") \
                or node.IsA("vtkMRMLDiffusionWeightedVolumeNode"):
            kind = "a colour (RGB) or vector volume" if node.IsA("vtkMRMLVectorVolumeNode") else \
                f"a {node.GetClassName()}"
            raise RunError(f"'{name}' is {kind}; the model takes a single-channel (greyscale) image. Convert it "
                           "first (module 'Vector to Scalar Volume').")
        if node.IsA("vtkMRMLMultiVolumeNode") or node.GetAttribute("MultiVolume.NumberOfFrames"):
            raise RunError(f"'{name}' is a 4D (multi-frame) volume; the model takes one 3D volume. Extract one "
                           "frame first.")
        img = node.GetImageData()
        if img is None or min(img.GetDimensions()) < 1 or img.GetNumberOfPoints() == 0:
            raise RunError(f"'{name}' has no voxels.")
        comps = img.GetNumberOfScalarComponents()
        if comps != 1:
            what = "a colour (RGB) image" if comps in (3, 4) else f"{comps} values per voxel (e.g. 4D frames)"
            raise RunError(f"'{name}' has {what}; the model takes a single-channel (greyscale) image. Convert it "
                           "first (module 'Vector to Scalar Volume').")
        scene = node.GetScene()
        if scene is not None:
            browsers = scene.GetNodesByClass("vtkMRMLSequenceBrowserNode")
            for i in range(browsers.GetNumberOfItems()):
                if browsers.GetItemAsObject(i).IsProxyNodeID(node.GetID()):
                    raise RunError(f"'{name}' is one time point of a 4D sequence; the model takes one 3D "
                                   "volume. Copy the frame you want to a new volume first (Sequences module).")

    @staticmethod
    def check_checkpoint(path) -> CheckpointInfo:
        try:
            return read_checkpoint_info(path)
        except CheckpointInfoError as exc:
            raise RunError(str(exc), kind="checkpoint") from None

    @staticmethod
    def check_clinical(info: CheckpointInfo, values: dict | None) -> dict[str, Any]:
        """Parse ``values`` (field -> raw value; absent / None / 'unknown' = unknown) with the core's schema."""
        from mmxai_core.errors import SchemaError

        values = dict(values or {})
        try:
            parsed = info.schema.parse_record(values)
        except SchemaError as exc:
            raise RunError(f"Clinical data: {exc}", kind="clinical") from None
        return {k: v for k, v in parsed.items() if v is not None}

    # ----------------------------------------------------------------------------------------- run
    def start(self, volume_node, clinical_values: dict | None, model_path, device: str = "auto",
              on_event: EventCallback | None = None, runner: Runner | None = None,
              metrics: list[str] | None = None) -> RunJob:
        """Check everything, write the request and start the worker; returns at once."""
        if self.current_job is not None and not self.current_job.finished:
            raise RunError("A case is already running; wait for it or cancel it.", kind="busy")
        try:
            core.ensure_core_importable()
        except ImportError as exc:
            raise RunError(str(exc), kind="start") from None
        self.check_volume(volume_node)
        info = self.check_checkpoint(model_path)
        clinical = self.check_clinical(info, clinical_values)
        if device not in DEVICES:
            raise RunError(f"Unknown device '{device}'; choose one of {', '.join(DEVICES)}.", kind="input")
        workdir = Path(tempfile.mkdtemp(prefix="MMXAI-", dir=self._temp_root()))
        try:
            input_path, out_dir = workdir / "input.nrrd", workdir / "out"
            out_dir.mkdir()
            try:
                nodes.write_volume_file(volume_node, str(input_path))
            except OSError as exc:
                raise RunError(f"The input volume could not be written for the worker: {exc}", kind="input") \
                    from None
            from mmxai_core.worker.protocol import WorkerRequest

            options: dict[str, Any] = {}
            if metrics is not None:
                options["metrics"] = list(metrics)
            request = WorkerRequest(image=input_path, checkpoint=Path(info.path), output_dir=out_dir,
                                    clinical=clinical, device=device, options=options)
            req_path = workdir / "request.json"
            req_path.write_text(json.dumps(request.to_dict(), indent=1), encoding="utf-8")
            runner = runner or self.runner_factory()
            job = RunJob(self, volume_node, info, workdir, runner, on_event)
            env = core.worker_environment(extra=self.worker_env)
            runner.start(self.worker_command + [str(req_path)], env, job.handle_line, job.handle_finished,
                         cwd=str(workdir))
        except WorkerStartError as exc:
            self._cleanup(workdir)
            raise RunError(str(exc), kind="start") from None
        except BaseException:
            self._cleanup(workdir)
            raise
        self.current_job = job
        return job

    def run(self, volume_node, clinical_values: dict | None, model_path, device: str = "auto",
            timeout: float | None = None, on_event: EventCallback | None = None,
            metrics: list[str] | None = None) -> RunOutputs:
        """Run one case to completion (blocking) and return the output nodes; RunError on failure."""
        job = self.start(volume_node, clinical_values, model_path, device, on_event=on_event,
                         runner=PopenRunner(), metrics=metrics)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not job.finished:
                job.poll(0.05)
                if deadline is not None and time.monotonic() > deadline and not job.finished:
                    job.cancel()
                    raise RunError(f"The worker did not finish within {timeout:g} s and was stopped.",
                                   kind="crash")
        except BaseException:
            if not job.finished:
                job.cancel()
            raise
        if job.state != "succeeded":
            raise job.error or RunError("The run failed.", kind="crash")
        assert job.outputs is not None
        return job.outputs

    def cancel(self) -> None:
        if self.current_job is not None:
            self.current_job.cancel()

    # ---------------------------------------------------------------------------------- results
    def _apply_result(self, job: RunJob) -> RunOutputs:
        """Read and check everything first, then create/update the output nodes in one go."""
        out_dir = job.workdir / "out"
        ev = job._result_event or {}
        try:
            result = read_result(out_dir, ev.get("result"))
        except ResultError as exc:
            raise RunError(f"The worker's results are incomplete: {exc}", kind="result") from None
        src = job.volume
        if src.GetScene() is not self.scene or not self.scene.IsNodePresent(src):
            raise RunError("The input volume was removed from the scene while the case was running.",
                           kind="input")
        names = result.file_names
        try:
            label = nodes.read_volume_file(str(out_dir / names["heatmap_label"]), "vtkMRMLLabelMapVolumeNode")
            heat = nodes.read_volume_file(str(out_dir / names["heatmap"]), "vtkMRMLScalarVolumeNode")
        except OSError as exc:
            raise RunError(f"The worker's heatmap could not be read: {exc}", kind="result") from None
        for what, n in (("heatmap_label", label), ("heatmap", heat)):
            ok, why = nodes.same_grid(src, n, tol_mm=_grid_tolerance(src))
            if not ok:
                raise RunError(f"The worker's {what} is not on the input's grid ({why}); it is not shown.",
                               kind="result")
        text = format_result_text(result)
        explained = result.explained_class or job.info.explained_class
        created: list = []
        base, sid = src.GetName(), src.GetID()
        scene = self.scene
        scene.StartState(scene.BatchProcessState)
        try:
            colors = nodes.get_or_create(scene, "vtkMRMLColorTableNode", sid, nodes.ROLE_COLORS,
                                         f"{base} MMXAI heatmap colours", created)
            nodes.update_color_table(colors, result.bins)
            lab = nodes.get_or_create(scene, "vtkMRMLLabelMapVolumeNode", sid, nodes.ROLE_LABEL,
                                      f"{base} MMXAI heatmap", created)
            nodes.set_volume_from(lab, label.GetImageData(), src)
            nodes.configure_label_display(lab, colors)
            cont = nodes.get_or_create(scene, "vtkMRMLScalarVolumeNode", sid, nodes.ROLE_HEATMAP,
                                       f"{base} MMXAI heatmap (continuous)", created)
            nodes.set_volume_from(cont, heat.GetImageData(), src)
            nodes.configure_continuous_display(cont, scene, result.bins.threshold)
            table = nodes.get_or_create(scene, "vtkMRMLTableNode", sid, nodes.ROLE_TABLE,
                                        f"{base} MMXAI Shapley values", created)
            nodes.update_table(table, result.shapley_rows, explained)
            pos = nodes.get_or_create(scene, "vtkMRMLPlotSeriesNode", sid, nodes.ROLE_SERIES_POS,
                                      f"raises p({explained})", created)
            neg = nodes.get_or_create(scene, "vtkMRMLPlotSeriesNode", sid, nodes.ROLE_SERIES_NEG,
                                      f"lowers p({explained})", created)
            chart = nodes.get_or_create(scene, "vtkMRMLPlotChartNode", sid, nodes.ROLE_CHART,
                                        f"{base} MMXAI Shapley chart", created)
            nodes.update_chart(chart, pos, neg, table, explained, "- research use, not for diagnosis")
            txt = nodes.get_or_create(scene, "vtkMRMLTextNode", sid, nodes.ROLE_TEXT, f"{base} MMXAI result",
                                      created)
            txt.SetText(text)
            out = {nodes.ROLE_COLORS: colors, nodes.ROLE_LABEL: lab, nodes.ROLE_HEATMAP: cont,
                   nodes.ROLE_TABLE: table, nodes.ROLE_SERIES_POS: pos, nodes.ROLE_SERIES_NEG: neg,
                   nodes.ROLE_CHART: chart, nodes.ROLE_TEXT: txt}
            note = nodes.group_in_subject_hierarchy(scene, src, [n for r, n in out.items()
                                                                 if r not in (nodes.ROLE_COLORS,)])
        except Exception:
            nodes.remove_nodes(scene, created)
            raise
        finally:
            scene.EndState(scene.BatchProcessState)
        return RunOutputs(result=result, nodes=out, text=text, note=note)

    def outputs_for(self, volume_node) -> dict[str, Any]:
        """The output nodes of an earlier run on ``volume_node`` (by role), e.g. after a scene reload."""
        return nodes.find_outputs(self.scene, volume_node.GetID()) if volume_node is not None else {}

    # ----------------------------------------------------------------------------------- display
    def show_overlay(self, outputs: RunOutputs | dict, volume_node, opacity: float = 0.5) -> None:
        """Input as background, heatmap bins as the label layer in every slice view."""
        ns = outputs.nodes if isinstance(outputs, RunOutputs) else outputs
        nodes.show_in_slice_views(self.scene, volume_node, label=ns.get(nodes.ROLE_LABEL), label_opacity=opacity)

    def set_overlay_opacity(self, outputs: RunOutputs | dict, opacity: float) -> None:
        ns = outputs.nodes if isinstance(outputs, RunOutputs) else outputs
        if ns.get(nodes.ROLE_LABEL) is not None:
            nodes.set_label_opacity(self.scene, ns[nodes.ROLE_LABEL].GetID(), opacity)

    def set_display_threshold(self, outputs: RunOutputs, threshold: float) -> None:
        """Hide heatmap bins below ``threshold`` (colour table alpha) and threshold the continuous map."""
        ns = outputs.nodes
        t = max(float(threshold), outputs.result.bins.threshold)
        if ns.get(nodes.ROLE_COLORS) is not None:
            nodes.update_color_table(ns[nodes.ROLE_COLORS], outputs.result.bins, display_threshold=t)
        cont = ns.get(nodes.ROLE_HEATMAP)
        if cont is not None and cont.GetDisplayNode() is not None:
            cont.GetDisplayNode().SetThreshold(t, 1.0)

    # ------------------------------------------------------------------------------------ export
    @staticmethod
    def export_report(outputs: RunOutputs, folder: str | os.PathLike, volume_name: str = "case") -> Path:
        """Write the core's report files (report.html, overlay.png, shap.png, result.json,
        heatmap_bins.json) of a finished run into a new subfolder of ``folder``; returns it."""
        folder = Path(folder)
        if not folder.is_dir():
            raise RunError(f"{folder}: not a folder.", kind="input")
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", volume_name).strip("_") or "case"
        target = folder / f"MMXAI-{safe}-{stamp}"
        n = 1
        while target.exists():
            n += 1
            target = folder / f"MMXAI-{safe}-{stamp}-{n}"
        target.mkdir()
        res = outputs.result
        for key, data in res.files.items():
            (target / Path(res.file_names.get(key, key)).name).write_bytes(data)
        (target / "result.txt").write_text(outputs.text + "\n", encoding="utf-8")
        (target / "NOTICE.txt").write_text(NOTICE + "\n", encoding="utf-8")
        return target

    # ---------------------------------------------------------------------------------- helpers
    def list_volumes(self) -> list[tuple[str, str]]:
        """(node ID, name) of the scene's scalar volumes that are not MMXAI outputs or labelmaps."""
        out = []
        col = self.scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
        for i in range(col.GetNumberOfItems()):
            n = col.GetItemAsObject(i)
            if n.GetAttribute(nodes.ATTR_ROLE) or n.IsA("vtkMRMLLabelMapVolumeNode") or n.GetHideFromEditors():
                continue
            out.append((n.GetID(), n.GetName()))
        return out

    def _temp_root(self) -> str | None:
        if self.temp_root is not None:
            return str(self.temp_root)
        if core.in_slicer_app():  # pragma: no cover - only real Slicer
            import slicer

            return str(slicer.app.temporaryPath)
        return None

    @staticmethod
    def _cleanup(workdir: Path) -> None:
        for _ in range(5):
            shutil.rmtree(workdir, ignore_errors=True)
            if not Path(workdir).exists():
                return
            time.sleep(0.1)  # Windows: files of a just-killed process may still be open


def _grid_tolerance(node) -> float:
    """1e-3 of the smallest voxel edge (at least 1e-5 mm): the NRRD round trip is exact to ~1e-12."""
    m = nodes.ijk_to_ras(node)
    spacing = [math.sqrt(sum(m.GetElement(i, j) ** 2 for i in range(3))) for j in range(3)]
    return max(1e-5, 1e-3 * min(spacing))
