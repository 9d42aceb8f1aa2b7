"""Configuration of one training run: six sections, YAML in and out, dotted ``--key=value`` overrides.

Research use, not for diagnosis.

A config file is YAML with up to six sections; every key is optional (defaults below)::

    model:       # the architecture (mmxai_core.model): a preset plus optional per-field overrides
      preset: tiny
      variant: attention          # attention | concat | image_only | clinical_only
      embed_dim: null             # null = the preset's value (any ModelConfig field except the data-given
                                  # ones: clinical_fields, num_classes, image_size)
    data:        # splits, caching, loading
      val_fraction: 0.15
      test_fraction: 0.15
      split_seed: 0
    preprocess:  # ImagePreprocessConfig (mmxai_core.data.image_preprocess), demo defaults:
      output_size_hw: [128, 128]  # in-plane model size (pixels)
      target_spacing_xy: [1.25, 1.25]
      target_spacing_z: 4.0       # mm between slices; the number of slices stays variable
    augment:     # AugmentConfig (mmxai_core.data.augment)
      p_elastic: 0.2
    optim:       # AdamW + warm-up/cosine schedule
      lr: 3.0e-4
    train:       # epochs, batches, early stopping, device, seed, evaluation
      epochs: 30

:func:`resolve_config` reads the file, applies overrides such as ``{"optim.lr": "3e-4"}`` (strings from the
command line are coerced to the field's type: ``3e-4`` becomes a float, ``[96,96]`` or ``96,96`` a pair,
``null`` None, ``true`` / ``false`` a boolean), and type-checks every value against the dataclasses below. An unknown section or key
raises :class:`ConfigError` naming it (with the closest known key). The resolved configuration is
:meth:`TrainConfig.to_dict` / :meth:`TrainConfig.to_yaml`; :meth:`TrainConfig.fingerprint` is a hash of the
parts that define the run (not of :data:`RUNTIME_KEYS`, which may change between an interrupted run and
its ``--resume``).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from mmxai_core.data.augment import AugmentConfig
from mmxai_core.data.preprocess.config import ImagePreprocessConfig
from mmxai_core.errors import MMXAIError

#: Keys that do not change what is computed (where it runs, how many workers, a test hook): left out of
#: :meth:`TrainConfig.fingerprint`, so a run may be resumed with other values.
RUNTIME_KEYS = ("train.device", "train.stop_after_epochs", "train.threads", "train.progress",
                "data.preprocess_workers", "data.loader_workers", "data.cache", "data.cache_dir")

#: Demo defaults of the image preprocessing, chosen for the synthetic cohort (mammograms ~160x128 px at
#: ~1 mm, MR series 96x96 px at 0.8-1 mm and 2-3 mm slices): 1.25 mm pixels fit a mammogram into 128 px,
#: 4 mm slices keep 12-25 slices of an MR series. Two N4 levels of 20 iterations (instead of 4 levels):
#: ~1.7 s instead of ~4 s per MR series; run once per case thanks to the cache.
PREPROCESS_DEFAULTS: dict[str, Any] = {"output_size_hw": (128, 128), "target_spacing_xy": (1.25, 1.25),
                                       "target_spacing_z": 4.0, "n4_iterations": (20, 20)}


class ConfigError(MMXAIError):
    """A configuration file or override is invalid (unknown key, wrong type, bad value)."""


# ---------------------------------------------------------------------------------------------- sections
@dataclass
class ModelSection:
    """The architecture: ``preset`` (``tiny`` | ``base``) and ``variant``; any other field left ``None``
    takes the preset's value. ``trunk_weights``: optional local file to start the CNN trunk from (never a
    download). ``clinical_fields``, ``num_classes`` and ``image_size`` come from the data."""

    preset: str = "tiny"
    variant: str = "attention"
    trunk: str | None = None
    trunk_out_index: int | None = None
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    mlp_ratio: float | None = None
    dropout: float | None = None
    fusion_heads: int | None = None
    token_pool: str | None = None
    reverse_fusion: bool | None = None
    final_norm: bool | None = None
    head_norm: bool | None = None
    fusion_ffn: bool | None = None
    neutral_unknown: bool | None = None
    mil_hidden: int | None = None
    slice_chunk: int | None = None
    clinical_mask_rate: float | None = None
    image_dropout_rate: float | None = None
    trunk_weights: str | None = None

    def overrides(self) -> dict[str, Any]:
        """The ModelConfig fields set here (not None), without preset / trunk_weights."""
        skip = ("preset", "trunk_weights")
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in skip and getattr(self, f.name) is not None}


@dataclass
class DataSection:
    """Splits, caching and loading.

    val_fraction, test_fraction: patient fractions for new splits (``data.splits``); both must leave a
        non-empty split. split_seed: seed of the splits (separate from ``train.seed``, so runs with several
        training seeds share one split).
    cache: ``disk`` keeps preprocessed arrays in ``cache_dir`` (keyed by the image file's hash and the
        preprocessing config; reused by ``--resume`` and reruns), ``memory`` only in memory. Either way
        each image is read and preprocessed once per process.
    cache_dir: folder of the disk cache; None = ``RUN_DIR/cache``. Several runs (the variants and seeds of
        an ablation) may share one folder: the keys keep different preprocessing apart.
    fingerprint: ``content`` hashes every image byte (sha256) for the data fingerprint and cache keys;
        ``size`` uses file sizes and modification times only (fast for very large cohorts).
    augment: apply ``augment`` to training cases (never to validation / test).
    preprocess_workers: processes that preprocess images before training (0 = in this process).
    loader_workers: DataLoader workers (0 = in this process; the arrays are in memory already).
    """

    val_fraction: float = 0.15
    test_fraction: float = 0.15
    split_seed: int = 0
    cache: str = "disk"
    cache_dir: str | None = None
    fingerprint: str = "content"
    augment: bool = True
    preprocess_workers: int = 0
    loader_workers: int = 0


@dataclass
class OptimSection:
    """AdamW and the learning-rate schedule (per step: linear warm-up, then cosine to ``min_lr_ratio * lr``).

    weight_decay is the paper's L2 term lambda (Eq. 6), applied as decoupled decay to weights only
    (``mmxai_core.model.parameter_groups``). warmup_epochs may be fractional. grad_clip: maximum global
    gradient norm (0 = off).
    """

    lr: float = 3e-4
    weight_decay: float = 0.05
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0


@dataclass
class TrainSection:
    """The loop and the final evaluation.

    epochs: maximum epochs. batch_size / eval_batch_size: cases per batch. patience / min_delta: early
    stopping on the validation loss (stop after ``patience`` epochs without a decrease larger than
    ``min_delta``). restore_best: release the weights of the best validation loss (else the last).
    class_weights: ``inverse`` (cross-entropy weights N / (C * n_c) from the training labels) or ``none``.
    amp: ``auto`` (CUDA: bf16 where supported, else fp16 with a gradient scaler; CPU/MPS: off),
    ``off``, ``bf16``, ``fp16``. device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``mps``.
    seed: weights, shuffling, augmentation, masking and dropout. threads: torch CPU threads (None = torch's
    default). threshold: ``youden`` or ``target_sensitivity`` (binary; chosen on validation).
    n_boot: patient-bootstrap resamples for the 95% CIs. progress: show progress bars.
    stop_after_epochs: stop (resumable) after this many epochs of this process (used by tests).
    unknown_calibration: weight of the "unknown"-calibration loss (0 = off, the default; single process
    only): each step hides one clinical field in the rows where it is known and pulls that field's learned
    "unknown" embedding (only it) towards giving, on average over the batch, the probabilities of the rows
    with the field entered, as the Bayes-optimal model does (E_x[p(y|x)] = E_x[p(y|x without the field)]).
    Why: a field the model ignores should not move the prediction between "entered" and "unknown", which
    the Shapley values (removal = unknown) report (README, "Known limitations").
    aux_image_only / aux_clinical_only: weights of two auxiliary cross-entropy losses (0 = off, the default;
    single process only): the step's image encoding decoded with every clinical field unknown, and the
    clinical values decoded with the missing-image token (:meth:`Trainer._unimodal_loss`). Why: the clinical
    facts are learned first and the image branch stays weak otherwise (README, "Explanation quality").
    unknown_refit: passes over the training cases of the refit of the clinical "unknown" embeddings after
    training (0 = off, the default; single process only; :mod:`mmxai_core.train.unknown_refit`): only those
    embeddings move, so that hiding a field changes the prediction by the field's contribution averaged over
    the training cases, in every coalition of the other fields. Why: the Shapley values (removal = unknown)
    then report what the model does with a field's value, not an "entered vs unknown" offset.
    """

    epochs: int = 30
    batch_size: int = 8
    eval_batch_size: int = 16
    patience: int = 5
    min_delta: float = 1e-4
    restore_best: bool = True
    class_weights: str = "inverse"
    amp: str = "auto"
    device: str = "auto"
    seed: int = 0
    threads: int | None = None
    threshold: str = "youden"
    target_sensitivity: float | None = None
    n_boot: int = 1000
    progress: bool = True
    stop_after_epochs: int | None = None
    unknown_calibration: float = 0.0
    aux_image_only: float = 0.0
    aux_clinical_only: float = 0.0
    unknown_refit: int = 0


def _preprocess_default() -> ImagePreprocessConfig:
    return ImagePreprocessConfig(**PREPROCESS_DEFAULTS)


@dataclass
class TrainConfig:
    """The whole run configuration (see the module docstring)."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    preprocess: ImagePreprocessConfig = field(default_factory=_preprocess_default)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)

    def __post_init__(self) -> None:
        validate(self)

    # ------------------------------------------------------------------------------ (de)serialise
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-ready nested dict, every key present (tuples as lists)."""
        return {name: _plain(dataclasses.asdict(getattr(self, name))) for name in SECTIONS}

    def to_yaml(self) -> str:
        """The resolved configuration as YAML (sections in a fixed order)."""
        import yaml

        head = "# mmxai-train resolved configuration. Research use only - not for diagnosis.\n"
        return head + yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of :meth:`to_dict` without :data:`RUNTIME_KEYS`."""
        d = self.to_dict()
        for key in RUNTIME_KEYS:
            section, name = key.split(".")
            d[section].pop(name, None)
        text = json.dumps(d, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def replace(self, **overrides: Any) -> "TrainConfig":
        """A copy with dotted-key overrides applied, e.g. ``cfg.replace(**{"model.variant": "concat"})``."""
        return resolve_config(self.to_dict(), overrides)


SECTIONS: dict[str, type] = {"model": ModelSection, "data": DataSection, "preprocess": ImagePreprocessConfig,
                             "augment": AugmentConfig, "optim": OptimSection, "train": TrainSection}


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------------------- checks
def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"config '{key}': must be one of {', '.join(allowed)}, got {value!r}")


def _at_least(key: str, value: Any, low: float) -> None:
    if value < low:
        raise ConfigError(f"config '{key}': must be >= {low:g}, got {value!r}")


def validate(cfg: TrainConfig) -> None:
    """Check values the dataclasses' types do not cover; raise :class:`ConfigError` naming the key."""
    from mmxai_core.model import list_presets, list_variants

    m, d, o, t = cfg.model, cfg.data, cfg.optim, cfg.train
    _choice("model.preset", m.preset, tuple(list_presets()))
    _choice("model.variant", m.variant, tuple(list_variants()))
    for key in ("val_fraction", "test_fraction"):
        v = getattr(d, key)
        if not 0.0 < v < 1.0:
            raise ConfigError(f"config 'data.{key}': must be in (0, 1) (every split must hold cases), got {v!r}")
    if d.val_fraction + d.test_fraction >= 1.0:
        raise ConfigError(f"config 'data.val_fraction' + 'data.test_fraction' must be < 1, got "
                          f"{d.val_fraction} + {d.test_fraction}")
    _choice("data.cache", d.cache, ("disk", "memory"))
    _choice("data.fingerprint", d.fingerprint, ("content", "size"))
    _at_least("data.preprocess_workers", d.preprocess_workers, 0)
    _at_least("data.loader_workers", d.loader_workers, 0)
    if cfg.preprocess.output_size_hw is None:
        raise ConfigError("config 'preprocess.output_size_hw': training needs a fixed in-plane size (H, W)")
    for key in ("lr", "eps"):
        if not getattr(o, key) > 0:
            raise ConfigError(f"config 'optim.{key}': must be > 0, got {getattr(o, key)!r}")
    for key in ("weight_decay", "warmup_epochs", "grad_clip"):
        _at_least(f"optim.{key}", getattr(o, key), 0.0)
    for key in ("beta1", "beta2"):
        if not 0.0 <= getattr(o, key) < 1.0:
            raise ConfigError(f"config 'optim.{key}': must be in [0, 1), got {getattr(o, key)!r}")
    if not 0.0 <= o.min_lr_ratio <= 1.0:
        raise ConfigError(f"config 'optim.min_lr_ratio': must be in [0, 1], got {o.min_lr_ratio!r}")
    for key in ("epochs", "batch_size", "eval_batch_size", "patience"):
        _at_least(f"train.{key}", getattr(t, key), 1)
    _at_least("train.min_delta", t.min_delta, 0.0)
    _at_least("train.n_boot", t.n_boot, 0)
    _at_least("train.unknown_calibration", t.unknown_calibration, 0.0)
    _at_least("train.aux_image_only", t.aux_image_only, 0.0)
    _at_least("train.aux_clinical_only", t.aux_clinical_only, 0.0)
    _at_least("train.unknown_refit", t.unknown_refit, 0)
    _choice("train.class_weights", t.class_weights, ("inverse", "none"))
    _choice("train.amp", t.amp, ("auto", "off", "bf16", "fp16"))
    _choice("train.device", t.device, ("auto", "cpu", "cuda", "mps"))
    _choice("train.threshold", t.threshold, ("youden", "target_sensitivity"))
    if t.threshold == "target_sensitivity" and (t.target_sensitivity is None or not 0 < t.target_sensitivity <= 1):
        raise ConfigError("config 'train.target_sensitivity': must be in (0, 1] with train.threshold "
                          f"target_sensitivity, got {t.target_sensitivity!r}")
    if t.threads is not None:
        _at_least("train.threads", t.threads, 1)
    if t.stop_after_epochs is not None:
        _at_least("train.stop_after_epochs", t.stop_after_epochs, 1)


# ---------------------------------------------------------------------------------------------- coercion
def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _describe(hint: Any) -> str:
    if _is_union(hint):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    origin = typing.get_origin(hint)
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0])}"
        return f"a list of {len(args)} ({', '.join(_describe(a) for a in args)})"
    return {int: "an integer", float: "a number", bool: "true/false", str: "text"}.get(hint, str(hint))


def coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert ``value`` (from YAML or a command-line string) to the type ``hint`` or raise ConfigError.

    Strings are accepted for numbers (``"3e-4"``), ``null`` / ``none`` for optional fields, and a
    comma-separated string for a tuple (``"96,96"``).
    """
    bad = ConfigError(f"config '{key}': expected {_describe(hint)}, got {value!r}")
    if _is_union(hint):
        args = typing.get_args(hint)
        if value is None or (isinstance(value, str) and value.strip().lower() in ("null", "none", "~")):
            if type(None) in args:
                return None
            raise bad
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except ConfigError:
                continue
        raise bad
    origin = typing.get_origin(hint)
    if origin is tuple:
        args = typing.get_args(hint)
        if isinstance(value, str):
            value = [v for v in value.strip().strip("[]()").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise bad
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise bad
        return tuple(coerce(v, a, key) for v, a in zip(value, args))
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.strip().lower() in ("true", "yes", "on", "1")
        raise bad
    if hint is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise bad from None
        raise bad
    if hint is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            out = float(value)
        elif isinstance(value, str):
            try:
                out = float(value.strip())
            except ValueError:
                raise bad from None
        else:
            raise bad
        if not math.isfinite(out):
            raise bad
        return out
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):  # YAML 1.1 reads on/off/yes/no as booleans (e.g. "n4: off")
            return "on" if value else "off"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad
    raise bad


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build_section(name: str, values: Mapping[str, Any], base: Any) -> Any:
    cls = SECTIONS[name]
    hints = _hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    current = {k: getattr(base, k) for k in known}
    for key, raw in values.items():
        if key not in known:
            raise ConfigError(_unknown_message(f"{name}.{key}", [f"{name}.{k}" for k in known]))
        current[key] = coerce(raw, hints[key], f"{name}.{key}")
    try:
        return cls(**current)
    except ConfigError:
        raise
    except MMXAIError as exc:  # PreprocessingError from ImagePreprocessConfig / AugmentConfig
        raise ConfigError(f"config '{name}': {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config '{name}': {exc}") from None


def _unknown_message(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown config key '{key}'{hint}"


# ---------------------------------------------------------------------------------------------- resolve
def _split_overrides(overrides: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        parts = key.split(".")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"config override '{key}': expected SECTION.KEY (e.g. optim.lr), sections: "
                              f"{', '.join(SECTIONS)}")
        section, name = parts
        if section not in SECTIONS:
            raise ConfigError(_unknown_message(key, [f"{s}.{f.name}" for s, c in SECTIONS.items()
                                                     for f in dataclasses.fields(c)]))
        out.setdefault(section, {})[name] = value  # strings are coerced by type
    return out


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML (or JSON) config file into a nested dict; ConfigError names the file and problem."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read the config file ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"{p}: not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of sections ({', '.join(SECTIONS)}), got {type(data).__name__}")
    return data


def resolve_config(base: Mapping[str, Any] | str | os.PathLike | None = None,
                   overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Defaults <- ``base`` (a config file path or a nested dict) <- ``overrides`` (dotted keys).

    Raises:
        ConfigError: unknown section or key (named, with the closest known one), a value of the wrong
            type, or an invalid value.
    """
    source = "config"
    if isinstance(base, (str, os.PathLike)):
        source = str(base)
        base = read_config_file(base)
    base = dict(base or {})
    for section, values in base.items():
        if section not in SECTIONS:
            close = difflib.get_close_matches(str(section), list(SECTIONS), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{source}: unknown config section '{section}'{hint}; sections: "
                              f"{', '.join(SECTIONS)}")
        if values is not None and not isinstance(values, Mapping):
            raise ConfigError(f"{source}: section '{section}' must be a mapping of keys to values")
    extra = _split_overrides(overrides or {})
    defaults = TrainConfig()
    sections = {}
    for name in SECTIONS:
        merged = {**dict(base.get(name) or {}), **extra.get(name, {})}
        sections[name] = _build_section(name, merged, getattr(defaults, name))
    return TrainConfig(**sections)


__all__ = ["TrainConfig", "ModelSection", "DataSection", "OptimSection", "TrainSection", "ConfigError",
           "SECTIONS", "RUNTIME_KEYS", "PREPROCESS_DEFAULTS", "resolve_config", "read_config_file", "coerce",
           "validate"]
