"""Torch dataset of a manifest: preprocessed images held in memory, clinical arrays, seeded augmentation,
and a collate that pads slices.

Research use, not for diagnosis.

Pieces, one job each:

* :class:`ImageStore` reads each image once (``mmxai_core.io.read_image``), preprocesses it with the run's
  :class:`~mmxai_core.data.image_preprocess.ImagePreprocessConfig` and keeps the float32 (Z, H, W) array in
  memory; optionally it also keeps the arrays on disk (``cache_dir/<key>.npy``, the key a sha256 of the image
  file's digest and the preprocessing config, written atomically, read with ``allow_pickle=False``), so a
  rerun or ``--resume`` does not preprocess again. Every array is checked for NaN / inf; the error names
  the case.
* :class:`MultimodalDataset` pairs the arrays with the clinical arrays of the fitted
  :class:`~mmxai_core.data.clinical.ClinicalPreprocessor` and, for training, augments each case with
  :class:`~mmxai_core.data.augment.Augmenter` seeded by (seed, epoch, case): the same run draws the same
  augmentations whatever the worker count or an interruption.
* :func:`collate_cases` pads a batch to its largest slice count S with ``slice_mask``; :class:`Batch`.
* :class:`EpochSampler`: a seeded shuffle per epoch (optionally one shard per rank of a process group).

Shapes: one case is ``image`` (S, 1, H, W) float32 with S its number of slices (a mammogram: 1),
``clin_values`` (F,) float32, ``clin_missing`` (F,) bool; a batch adds B in front and pads S.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from mmxai_core.data.augment import AugmentConfig, Augmenter
from mmxai_core.data.clinical import ClinicalArrays
from mmxai_core.data.preprocess.config import ImagePreprocessConfig
from mmxai_core.errors import MMXAIError, PreprocessingError

CACHE_FORMAT = "mmxai.image_cache.v1"
Progress = Callable[[int, int], None]


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (numpy SeedSequence): e.g. ``mix_seed(seed, epoch, case)``."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFFFFFF for p in parts]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


# ---------------------------------------------------------------------------------------------- preprocessing
def preprocess_file(path: str, config: ImagePreprocessConfig) -> np.ndarray:
    """Read and preprocess one image -> float32 (Z, H, W), C-contiguous (no finiteness check here)."""
    from mmxai_core.data.image_preprocess import ImagePreprocessor
    from mmxai_core.io import read_image

    image = read_image(path)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overflow warnings: the NaN check below names the case instead
        array, _ = ImagePreprocessor(config).apply(image)
    return np.ascontiguousarray(array, dtype=np.float32)


def _worker_preprocess(path: str, config_dict: dict) -> tuple[str, Any]:
    """Process-pool entry: ("ok", array) or ("error", (is_user_error, message))."""
    try:
        return "ok", preprocess_file(path, ImagePreprocessConfig.from_dict(config_dict))
    except MMXAIError as exc:
        return "error", (True, str(exc).splitlines()[0])
    except Exception as exc:  # a bug: re-raised in the parent as RuntimeError
        return "error", (False, f"{type(exc).__name__}: {exc}")


def check_finite(array: np.ndarray, where: str, what: str = "after image preprocessing") -> None:
    """Raise PreprocessingError naming ``where`` if ``array`` holds NaN or inf."""
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise PreprocessingError(f"{where}: {bad} NaN/inf value(s) {what}; check the image and the "
                                 f"preprocess settings (intensity mode, clipping)")


@dataclasses.dataclass
class LoadStats:
    """What :meth:`ImageStore.load` did: images computed, read from the disk cache, seconds."""

    computed: int = 0
    from_disk: int = 0
    seconds: float = 0.0


class ImageStore:
    """Preprocessed images, each computed once per process (module docstring).

    Args:
        config: the run's image preprocessing.
        cache_dir: folder for the disk cache, or None (memory only).
        digests: ``{path: FileDigest}`` (:mod:`mmxai_core.train.fingerprint`) for the cache keys; a
            missing path is hashed by content when first needed.
    """

    def __init__(self, config: ImagePreprocessConfig, cache_dir: str | os.PathLike | None = None,
                 digests: Mapping[str, Any] | None = None):
        self.config = config
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.digests = dict(digests or {})
        self._arrays: dict[str, np.ndarray] = {}
        self._dirty: set[str] = set()
        self._config_json = json.dumps(config.to_dict(), sort_keys=True)

    def __contains__(self, path: str) -> bool:
        return path in self._arrays

    def __len__(self) -> int:
        return len(self._arrays)

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self._arrays.values()))

    def cache_key(self, path: str) -> str:
        """sha256 of (cache format, image digest, preprocessing config JSON)."""
        if path not in self.digests:
            from mmxai_core.train.fingerprint import image_digest

            self.digests[path] = image_digest(path)
        d = self.digests[path]
        text = f"{CACHE_FORMAT}\n{d.sha256}\n{d.n_bytes}\n{self._config_json}"
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def _cache_file(self, path: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"{self.cache_key(path)}.npy"

    def _read_cached(self, path: str) -> np.ndarray | None:
        f = self._cache_file(path)
        if f is None or not f.is_file():
            return None
        try:
            arr = np.load(f, allow_pickle=False)
        except (OSError, ValueError):
            return None  # unreadable cache entry: compute again (and overwrite on flush)
        if arr.dtype != np.float32 or arr.ndim != 3 or not np.isfinite(arr).all():
            return None
        return arr

    def get(self, path: str) -> np.ndarray:
        """The preprocessed array (Z, H, W) float32 of ``path`` (computed now if not loaded)."""
        if path not in self._arrays:
            self.load([path])
        return self._arrays[path]

    def load(self, paths: Sequence[str], names: Mapping[str, str] | None = None, workers: int = 0,
             progress: Progress | None = None) -> LoadStats:
        """Make every path's array available: from memory, the disk cache, or by preprocessing.

        ``names`` maps a path to how errors name it (e.g. ``case P1/img.dcm (manifest row 3)``).
        ``workers`` > 0 preprocesses in that many processes. Raises the image's read error or
        PreprocessingError (NaN/inf) naming the case; nothing is written to disk here (see :meth:`flush`).
        """
        start = time.perf_counter()
        stats = LoadStats()
        names = names or {}
        todo = []
        unique = [p for p in dict.fromkeys(paths) if p not in self._arrays]
        for path in unique:
            arr = self._read_cached(path)
            if arr is None:
                todo.append(path)
            else:
                self._arrays[path] = arr
                stats.from_disk += 1
        done = len(unique) - len(todo)
        if progress is not None and unique:
            progress(done, len(unique))

        def accept(path: str, arr: np.ndarray) -> None:
            nonlocal done
            check_finite(arr, names.get(path, path))
            self._arrays[path] = arr
            self._dirty.add(path)
            stats.computed += 1
            done += 1
            if progress is not None:
                progress(done, len(unique))

        if workers > 0 and len(todo) > 1:
            self._load_parallel(todo, names, workers, accept)
        else:
            for path in todo:
                try:
                    arr = preprocess_file(path, self.config)
                except MMXAIError as exc:
                    raise _with_case(exc, names.get(path)) from None
                accept(path, arr)
        stats.seconds = time.perf_counter() - start
        return stats

    def _load_parallel(self, todo: list[str], names: Mapping[str, str], workers: int,
                       accept: Callable[[str, np.ndarray], None]) -> None:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        cfg = self.config.to_dict()
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            for path, (status, payload) in zip(todo, pool.map(_worker_preprocess, todo, [cfg] * len(todo))):
                if status == "ok":
                    accept(path, payload)
                    continue
                user, message = payload
                if not user:
                    raise RuntimeError(f"preprocessing {path}: {message}")
                where = names.get(path)
                raise MMXAIError(f"{where}: {message}" if where else message)

    def flush(self) -> int:
        """Write arrays computed in this process to the disk cache (atomically); returns how many."""
        if self.cache_dir is None:
            self._dirty.clear()
            return 0
        from mmxai_core.utils.atomic import atomic_path

        self.cache_dir.mkdir(parents=True, exist_ok=True)
        n = 0
        for path in sorted(self._dirty):
            dest = self._cache_file(path)
            with atomic_path(dest) as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, self._arrays[path], allow_pickle=False)
            n += 1
        self._dirty.clear()
        return n


def _with_case(exc: MMXAIError, where: str | None) -> MMXAIError:
    """The same error type with the case named in front of the first line (when not already there)."""
    if not where:
        return exc
    text = str(exc)
    new = MMXAIError.__new__(type(exc))
    new.__dict__.update(exc.__dict__)
    Exception.__init__(new, f"{where}: {text}")
    return new


# ---------------------------------------------------------------------------------------------- dataset
@dataclasses.dataclass
class CaseItem:
    """One case: ``image`` (S, 1, H, W) float32, ``image_present`` bool, ``clin_values`` (F,) float32,
    ``clin_missing`` (F,) bool, ``label`` class index, ``index`` position in the dataset."""

    image: torch.Tensor
    image_present: bool
    clin_values: torch.Tensor
    clin_missing: torch.Tensor
    label: int
    index: int


class MultimodalDataset(Dataset):
    """The cases of a manifest (or a subset) for the model.

    Args:
        manifest: a :class:`~mmxai_core.data.manifest.Manifest` (e.g. ``manifest.subset(train_rows)``).
        clinical: :class:`ClinicalArrays` of these rows (``preprocessor.transform(manifest.records)``).
        store: the :class:`ImageStore` (shared between splits); None when ``use_images`` is False.
        augment: augmentation for training cases, or None (validation / test).
        seed: base seed of the augmentation (drawn per (seed, epoch, case)).
        use_images: False for a model without an image branch: every case gets a 1-slice zero image
            with ``image_present`` False and no image is read.
        names: how errors name each row (default: ``case <key> (manifest row <r>)``).
    """

    def __init__(self, manifest: Any, clinical: ClinicalArrays, store: ImageStore | None, *,
                 augment: AugmentConfig | None = None, seed: int = 0, use_images: bool = True,
                 names: Sequence[str] | None = None):
        from mmxai_core.train.fingerprint import case_keys

        if len(clinical) != len(manifest):
            raise ValueError(f"clinical arrays have {len(clinical)} rows, the manifest {len(manifest)}")
        if use_images and store is None:
            raise ValueError("a dataset with images needs an ImageStore")
        self.manifest = manifest
        self.store = store
        self.use_images = use_images
        self.seed = int(seed)
        self.epoch = 0
        self.augmenter = Augmenter(augment) if augment is not None else None
        self.keys = case_keys(manifest)
        rows = manifest.rows
        self.names = list(names) if names is not None else [f"case {k} (manifest row {r})"
                                                            for k, r in zip(self.keys, rows)]
        self.paths = [str(p) for p in manifest.table["image"]]
        self.labels = manifest.labels.copy()
        self.patient_ids = np.asarray([str(p) for p in manifest.patients], dtype=object)
        self.clin_values = torch.from_numpy(np.ascontiguousarray(clinical.values, dtype=np.float32))
        self.clin_missing = torch.from_numpy(np.ascontiguousarray(clinical.missing, dtype=bool))
        for i in range(len(self)):
            check_finite(clinical.values[i], self.names[i], "in the clinical values")
        hw = store.config.output_size_hw if store is not None else None
        self._blank_hw = tuple(hw) if hw else (32, 32)

    def __len__(self) -> int:
        return len(self.labels)

    def load_images(self, workers: int = 0, progress: Progress | None = None) -> LoadStats:
        """Preprocess (or read from cache) every image of this dataset now, checking each for NaN/inf."""
        if not self.use_images:
            return LoadStats()
        first = dict(zip(reversed(self.paths), reversed(self.names)))  # a shared image: its first row
        return self.store.load(self.paths, names=first, workers=workers, progress=progress)

    def without_augmentation(self) -> "MultimodalDataset":
        """The same cases (sharing every array) as seen at evaluation: no augmentation."""
        view = copy.copy(self)
        view.augmenter = None
        return view

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (call before iterating each epoch)."""
        self.epoch = int(epoch)

    def slices(self, index: int) -> int:
        """Number of slices S of case ``index`` (1 without images)."""
        return int(self.store.get(self.paths[index]).shape[0]) if self.use_images else 1

    def __getitem__(self, index: int) -> CaseItem:
        if self.use_images:
            array = self.store.get(self.paths[index])
            image = torch.from_numpy(array).unsqueeze(1)  # (S, 1, H, W), shares the cached memory
            if self.augmenter is not None:
                image = self.augmenter(image, seed=mix_seed(self.seed, self.epoch, index))
            present = True
        else:
            image = torch.zeros(1, 1, *self._blank_hw)
            present = False
        return CaseItem(image=image, image_present=present, clin_values=self.clin_values[index],
                        clin_missing=self.clin_missing[index], label=int(self.labels[index]), index=int(index))


# ---------------------------------------------------------------------------------------------- batches
@dataclasses.dataclass
class Batch:
    """A padded batch of B cases (S = the largest slice count in the batch).

    images (B, S, 1, H, W) float32, 0 on padding; slice_mask (B, S) bool, True = real slice;
    image_present (B,) bool; clin_values (B, F) float32; clin_missing (B, F) bool; labels (B,) int64;
    indices (B,) int64 positions in the dataset.
    """

    images: torch.Tensor
    slice_mask: torch.Tensor
    image_present: torch.Tensor
    clin_values: torch.Tensor
    clin_missing: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def n_slices(self) -> int:
        """Real slices in the batch (padding excluded), of cases with an image."""
        return int((self.slice_mask & self.image_present[:, None]).sum())

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        return Batch(**{f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                        for f in dataclasses.fields(self)})

    def pin_memory(self) -> "Batch":
        """For ``DataLoader(pin_memory=True)``."""
        return Batch(**{f.name: getattr(self, f.name).pin_memory() for f in dataclasses.fields(self)})


def collate_cases(items: Sequence[CaseItem]) -> Batch:
    """Stack cases into a :class:`Batch`, zero-padding slices to the batch's largest S."""
    if not items:
        raise ValueError("cannot collate an empty batch")
    hw = {tuple(it.image.shape[-2:]) for it in items}
    if len(hw) != 1:
        raise ValueError(f"cases of one batch differ in in-plane size {sorted(hw)}; set preprocess.output_size_hw")
    (h, w), = hw
    b, s = len(items), max(int(it.image.shape[0]) for it in items)
    images = torch.zeros(b, s, 1, h, w, dtype=torch.float32)
    mask = torch.zeros(b, s, dtype=torch.bool)
    for i, it in enumerate(items):
        n = int(it.image.shape[0])
        images[i, :n] = it.image
        mask[i, :n] = True
    return Batch(images=images, slice_mask=mask,
                 image_present=torch.tensor([it.image_present for it in items], dtype=torch.bool),
                 clin_values=torch.stack([it.clin_values for it in items]),
                 clin_missing=torch.stack([it.clin_missing for it in items]),
                 labels=torch.tensor([it.label for it in items], dtype=torch.int64),
                 indices=torch.tensor([it.index for it in items], dtype=torch.int64))


class EpochSampler(Sampler[int]):
    """Dataset positions for one epoch: a seeded permutation (``shuffle``) or ``0..n-1``.

    The permutation depends only on (seed, epoch), so a resumed run visits cases in the same order. With
    ``world_size`` > 1, rank r takes positions r, r + world_size, ... of the permutation (padded by
    wrapping around so every rank gets the same count).
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        self.n, self.seed, self.shuffle = int(n), int(seed), bool(shuffle)
        self.rank, self.world_size = int(rank), int(world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        gen = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, 0x5A3))
        return torch.randperm(self.n, generator=gen).tolist()

    def __iter__(self) -> Iterator[int]:
        order = self._order()
        if self.world_size > 1:
            per_rank = -(-self.n // self.world_size)
            order = (order * (1 + per_rank * self.world_size // max(1, self.n)))[:per_rank * self.world_size]
            order = order[self.rank::self.world_size]
        return iter(order)

    def __len__(self) -> int:
        return self.n if self.world_size == 1 else -(-self.n // self.world_size)


def make_loader(dataset: MultimodalDataset, batch_size: int, sampler: Sampler, workers: int = 0,
                pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader of :class:`Batch` objects in the sampler's order."""
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                       collate_fn=collate_cases, pin_memory=pin_memory, drop_last=False,
                                       generator=torch.Generator().manual_seed(0),
                                       persistent_workers=False)


__all__ = ["ImageStore", "LoadStats", "MultimodalDataset", "CaseItem", "Batch", "collate_cases", "EpochSampler",
           "make_loader", "preprocess_file", "check_finite", "mix_seed", "CACHE_FORMAT"]
