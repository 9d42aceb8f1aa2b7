"""Time reading + image preprocessing on synthetic inputs; prints a small table.

Cases: a 256 x 256 x 64 MR-like series (0.7 x 0.7 x 2.0 mm, oblique) and a 2048 x 1664 2-D mammogram-like
image (0.1 mm, right breast). Each row is the median (and min) of 5 runs after one warm-up run. The
"read + preprocess" rows first write the images as DICOM (a 64-file MR series, one MG file) into a
temporary folder and time ``read_image`` followed by ``ImagePreprocessor.apply``.

Usage::

    python MMXAICore/benchmarks/bench_preprocess.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from mmxai_core.data.image_preprocess import (ImagePreprocessConfig, ImagePreprocessor, to_model_space,
                                              to_original_grid)
from mmxai_core.io import Image


def mr_series() -> Image:
    """(64, 256, 256) MR-like volume: a body ellipsoid with a multiplicative bias and noise."""
    z, y, x = np.indices((64, 256, 256), dtype=np.float32)
    body = ((x - 128) / 110) ** 2 + ((y - 128) / 90) ** 2 + ((z - 32) / 40) ** 2 <= 1.0
    bias = np.exp(0.4 * (x / 256 - 0.5) + 0.3 * (y / 256 - 0.5) ** 2)
    rng = np.random.default_rng(0)
    arr = (np.where(body, 400.0, 10.0) * bias + rng.normal(0, 15, body.shape)).astype(np.float32)
    c, s = np.cos(np.deg2rad(12)), np.sin(np.deg2rad(12))
    direction = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    return Image(arr, (0.7, 0.7, 2.0), (-90.0, -90.0, -64.0), direction, {"Modality": "MR"})


def mammogram() -> Image:
    """(1, 2048, 1664) mammogram-like image of a right breast at 0.1 mm."""
    y, x = np.mgrid[:2048, :1664].astype(np.float32)
    breast = ((x - 1663) / 1300) ** 2 + ((y - 1024) / 900) ** 2 <= 1.0
    rng = np.random.default_rng(1)
    arr = (np.where(breast, 1800.0, 60.0) + rng.normal(0, 40, breast.shape)).astype(np.float32)
    return Image(arr[np.newaxis], (0.1, 0.1, 1.0), meta={"Modality": "MG", "ImageLaterality": "R"})


def timed(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, min(times) * 1e3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    mr, mg = mr_series(), mammogram()
    cases = [
        ("MR 256x256x64", mr, "defaults (N4 + z-score, 1 mm, 256x256)", ImagePreprocessConfig()),
        ("MR 256x256x64", mr, "no N4 (z-score, 1 mm, 256x256)", ImagePreprocessConfig(n4="off")),
        ("MG 2048x1664", mg, "defaults (percentile, 1 mm, 256x256, flip)", ImagePreprocessConfig()),
        ("MG 2048x1664", mg, "0.2 mm, 1024x832, flip",
         ImagePreprocessConfig(target_spacing_xy=(0.2, 0.2), output_size_hw=(1024, 832))),
    ]
    rows = []
    for name, image, label, cfg in cases:
        pre = ImagePreprocessor(cfg)
        out, record = pre.apply(image)
        med, best = timed(lambda: pre.apply(image), args.repeats)
        rows.append((name, f"apply: {label}", med, best, "x".join(map(str, out.shape))))
        heat = np.random.default_rng(0).random(record.model_shape).astype(np.float32)
        med, best = timed(lambda: to_original_grid(heat, record), args.repeats)
        rows.append((name, "  to_original_grid (linear)", med, best, "x".join(map(str, image.shape))))
        mask = (image.array > np.median(image.array)).astype(np.uint8)
        med, best = timed(lambda: to_model_space(mask, record), args.repeats)
        rows.append((name, "  to_model_space (nearest)", med, best, "x".join(map(str, out.shape))))

    rows.extend(read_and_preprocess_rows(mr, mg, args.repeats))

    import SimpleITK as sitk

    print(f"image preprocessing, median of {args.repeats} after warm-up; CPUs: {os.cpu_count()}, "
          f"SimpleITK threads: {sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()}")
    head = f"{'case':<16} {'step':<52} {'median ms':>10} {'min ms':>9}  output (Z,H,W)"
    print(head)
    print("-" * len(head))
    for name, label, med, best, shape in rows:
        print(f"{name:<16} {label:<52} {med:>10.1f} {best:>9.1f}  {shape}")


def read_and_preprocess_rows(mr: Image, mg: Image, repeats: int) -> list[tuple]:
    """Write ``mr`` as a DICOM series and ``mg`` as one DICOM file; time read_image + apply."""
    import tempfile
    from pathlib import Path

    from mmxai_core.io import read_image
    from mmxai_core.io.dicom_writer import dicom_dataset, write_dicom, write_dicom_series

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        series = Path(tmp) / "mr"
        stored = mr.with_array(np.clip(mr.array, 0, 4000).astype(np.uint16))
        write_dicom_series(stored, series, modality="MR")
        mg_file = Path(tmp) / "mg.dcm"
        mg_pixels = np.clip(mg.array[0], 0, 4095).astype(np.uint16)
        write_dicom(dicom_dataset(mg_pixels, modality="MG", spacing=(0.1, 0.1), imager_spacing=True,
                                  tags={"ImageLaterality": "R"}), mg_file)
        cases = [("MR 256x256x64", series, "read DICOM series + preprocess (no N4)", ImagePreprocessConfig(n4="off")),
                 ("MR 256x256x64", series, "read DICOM series + preprocess (N4)", ImagePreprocessConfig()),
                 ("MG 2048x1664", mg_file, "read DICOM file + preprocess (defaults)", ImagePreprocessConfig())]
        for name, path, label, cfg in cases:
            pre = ImagePreprocessor(cfg)
            med, best = timed(lambda: read_image(path), repeats)
            rows.append((name, f"read_image only ({path.name})", med, best, "-"))
            out_shape = pre.apply(read_image(path))[0].shape
            med, best = timed(lambda: pre.apply(read_image(path)), repeats)
            rows.append((name, label, med, best, "x".join(map(str, out_shape))))
    return rows


if __name__ == "__main__":
    main()
