"""Dataset, image store (read once, disk cache), seeded augmentation, collate with slice padding, sampler."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from mmxai_core.data import dataset as ds_mod
from mmxai_core.data.augment import AugmentConfig
from mmxai_core.data.clinical import ClinicalPreprocessor
from mmxai_core.data.dataset import (Batch, CaseItem, EpochSampler, ImageStore, MultimodalDataset, collate_cases,
                                     make_loader)
from mmxai_core.data.manifest import load_manifest
from mmxai_core.data.preprocess.config import ImagePreprocessConfig
from mmxai_core.data.schema import load_schema
from mmxai_core.errors import PreprocessingError

SCHEMA = """classes: [benign, malignant]
fields:
  - {name: age, type: numeric, range: [0, 120]}
  - {name: grade, type: ordinal, categories: [1, 2, 3]}
"""
CFG = ImagePreprocessConfig(output_size_hw=(32, 32), target_spacing_xy=(2.0, 2.0), target_spacing_z=None,
                            n4="off", crop="center", laterality="off")


def write_nrrd(path, array, spacing=(1.0, 1.0, 1.0)):
    img = sitk.GetImageFromArray(np.asarray(array, dtype=np.float32))
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))


def tiny_cohort(tmp_path, n=8, slices=(1, 3), bad_row=None):
    """n NRRD images (alternating 1 and 3 slices), manifest.csv and schema.yaml; row ``bad_row`` gets
    extreme values that overflow the percentile scaling (NaN after preprocessing)."""
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    lines = ["patient_id,image,label,age,grade"]
    for i in range(n):
        z = slices[i % len(slices)]
        arr = rng.normal(100, 20, size=(z, 48, 40))
        if i == bad_row:
            arr = np.full((z, 48, 40), 3e38)
            arr[:, ::2] = -3e38
        write_nrrd(tmp_path / "img" / f"c{i}.nrrd", arr)
        lines.append(f"P{i},img/c{i}.nrrd,{'malignant' if i % 2 else 'benign'},{40 + i},{1 + i % 3}")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "schema.yaml").write_text(SCHEMA)
    schema = load_schema(tmp_path / "schema.yaml")
    manifest = load_manifest(tmp_path / "manifest.csv", schema)
    arrays = ClinicalPreprocessor(schema).fit_transform(manifest.records)
    return manifest, arrays


def test_collate_pads_slices_and_masks():
    items = [CaseItem(torch.ones(s, 1, 8, 8) * (s + 1), True, torch.tensor([0.5, 1.0]),
                      torch.tensor([False, True]), s % 2, i) for i, s in enumerate((1, 3, 2))]
    b = collate_cases(items)
    assert b.images.shape == (3, 3, 1, 8, 8) and b.slice_mask.tolist() == [[True, False, False], [True] * 3,
                                                                        [True, True, False]]
    assert float(b.images[0, 1:].abs().sum()) == 0.0 and float(b.images[1, 2, 0, 0, 0]) == 4.0
    assert b.labels.tolist() == [1, 1, 0] and b.indices.tolist() == [0, 1, 2] and b.n_slices == 6
    assert b.clin_missing.dtype == torch.bool and b.clin_values.shape == (3, 2)
    with pytest.raises(ValueError, match="in-plane size"):
        collate_cases([items[0], CaseItem(torch.ones(1, 1, 4, 4), True, items[0].clin_values,
                                          items[0].clin_missing, 0, 3)])


def test_each_image_read_once_and_disk_cache(tmp_path, monkeypatch):
    manifest, arrays = tiny_cohort(tmp_path)
    calls = []
    real = ds_mod.preprocess_file
    monkeypatch.setattr(ds_mod, "preprocess_file", lambda p, c: calls.append(p) or real(p, c))
    cache = tmp_path / "cache"
    store = ImageStore(CFG, cache_dir=cache)
    data = MultimodalDataset(manifest, arrays, store, augment=AugmentConfig(), seed=1)
    stats = data.load_images()
    assert stats.computed == len(manifest) and stats.from_disk == 0
    loader = make_loader(data, 3, EpochSampler(len(data), seed=0))
    for epoch in (1, 2):
        data.set_epoch(epoch)
        seen = [b.images.shape[1] for b in loader]
        assert max(seen) == 3
    assert len(calls) == len(manifest)  # read once, not once per epoch
    assert not cache.exists()            # nothing on disk before flush (after validation)
    assert store.flush() == len(manifest) and len(list(cache.glob("*.npy"))) == len(manifest)
    # a new process: everything comes from the disk cache, bit-identical
    store2 = ImageStore(CFG, cache_dir=cache)
    stats2 = MultimodalDataset(manifest, arrays, store2).load_images()
    assert stats2.computed == 0 and stats2.from_disk == len(manifest) and len(calls) == len(manifest)
    for p in data.paths:
        np.testing.assert_array_equal(store.get(p), store2.get(p))
        assert store2.get(p).dtype == np.float32 and store2.get(p).shape[1:] == (32, 32)
    # another preprocessing config -> other keys, computed again
    other = ImageStore(ImagePreprocessConfig(**{**CFG.to_dict(), "output_size_hw": [16, 16]}), cache_dir=cache)
    assert other.cache_key(data.paths[0]) != store.cache_key(data.paths[0])
    # a corrupt cache entry is recomputed, not trusted
    victim = store.cache_key(data.paths[0])
    (cache / f"{victim}.npy").write_bytes(b"garbage")
    store3 = ImageStore(CFG, cache_dir=cache)
    assert store3.load([data.paths[0]]).computed == 1


def test_augmentation_is_seeded_per_epoch_and_case(tmp_path):
    manifest, arrays = tiny_cohort(tmp_path, n=4)
    store = ImageStore(CFG)
    aug = AugmentConfig(p_affine=1.0, p_noise=1.0, p_elastic=0.0)
    data = MultimodalDataset(manifest, arrays, store, augment=aug, seed=7)
    data.load_images()
    data.set_epoch(1)
    a1 = data[1].image.clone()
    _ = data[0], data[2]                     # access order does not matter
    np.testing.assert_array_equal(data[1].image, a1)
    data.set_epoch(2)
    assert not torch.equal(data[1].image, a1)
    plain = MultimodalDataset(manifest, arrays, store)
    assert torch.equal(plain[1].image[:, 0], torch.from_numpy(store.get(plain.paths[1])))
    assert not torch.equal(plain[1].image, a1)
    other_seed = MultimodalDataset(manifest, arrays, store, augment=aug, seed=8)
    other_seed.set_epoch(1)
    assert not torch.equal(other_seed[1].image, a1)


def test_nan_after_preprocessing_names_the_case(tmp_path):
    manifest, arrays = tiny_cohort(tmp_path, n=4, bad_row=2)
    data = MultimodalDataset(manifest, arrays, ImageStore(CFG, cache_dir=tmp_path / "cache"))
    with pytest.raises(PreprocessingError, match=r"case P2/img/c2\.nrrd \(manifest row 4\).*NaN"):
        data.load_images()
    assert not (tmp_path / "cache").exists()


def test_clinical_only_dataset_reads_no_image(tmp_path, monkeypatch):
    manifest, arrays = tiny_cohort(tmp_path, n=4)
    monkeypatch.setattr(ds_mod, "preprocess_file", lambda p, c: pytest.fail("image read"))
    data = MultimodalDataset(manifest, arrays, None, use_images=False)
    item = data[0]
    assert item.image.shape == (1, 1, 32, 32) and item.image_present is False
    batch = collate_cases([data[0], data[1]])
    assert isinstance(batch, Batch) and not batch.image_present.any() and batch.n_slices == 0


def test_epoch_sampler_is_seeded_and_shards():
    s = EpochSampler(10, seed=3)
    s.set_epoch(1)
    e1 = list(s)
    assert sorted(e1) == list(range(10)) and list(s) == e1
    s.set_epoch(2)
    assert list(s) != e1
    shards = []
    for rank in range(3):
        r = EpochSampler(10, seed=3, rank=rank, world_size=3)
        r.set_epoch(1)
        shards.append(list(r))
        assert len(shards[-1]) == len(r) == 4
    assert set(sum(shards, [])) == set(range(10))
    assert list(EpochSampler(5, shuffle=False)) == [0, 1, 2, 3, 4]
