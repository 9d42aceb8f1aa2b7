"""Training throughput of mmxai-train's loop against a plain PyTorch loop (research use only).

    python MMXAICore/benchmarks/bench_train.py [--cases 48] [--batch 8] [--size 128] [--repeats 5]
                                              [--threads 1] [--json out.json]

The same model (tiny architecture with explicit settings, 10 fields, same initial weights), the same
augmentation (``Augmenter`` with the default ``AugmentConfig``, seeded per case and epoch) and the same
in-memory data (``--cases`` random 2D cases, no file I/O):

* ``mmxai``: ``Trainer.train_epoch`` of ``mmxai_core.train.loop`` (DataLoader + collate, training-time
  missingness, AdamW, warm-up/cosine schedule, gradient clipping, class weights, timing);
* ``plain``: a hand-written loop: per batch, augment each case, stack, forward, cross-entropy, backward,
  clip, AdamW step;
* ``data``: the mmxai loader alone (augmentation + collate, no model), to show the data pipeline is not
  the bottleneck.

One epoch per round, the three side by side, median of ``--repeats`` after one warm-up round; throughput
in cases per second. Research use only - not for diagnosis.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from common import FIELDS10, bench_model, interleaved, setup_threads, write_json


class InMemoryCases(torch.utils.data.Dataset):
    """Random 2D cases in memory with the dataset interface the trainer uses (set_epoch, CaseItem)."""

    def __init__(self, n: int, size: int, augment=True, seed: int = 0):
        from mmxai_core.data.augment import AugmentConfig, Augmenter

        gen = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, 1, 1, size, size, generator=gen)
        self.values = torch.rand(n, 10, generator=gen)
        self.values[:, 6:] = torch.randint(0, 3, (n, 4), generator=gen).float()
        self.missing = torch.zeros(n, 10, dtype=torch.bool)
        self.labels = np.arange(n) % 2
        self.augmenter = Augmenter(AugmentConfig()) if augment else None
        self.seed, self.epoch = seed, 0

    def __len__(self) -> int:
        return len(self.labels)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def augmented(self, i: int) -> torch.Tensor:
        from mmxai_core.data.dataset import mix_seed

        img = self.images[i]
        return self.augmenter(img, seed=mix_seed(self.seed, self.epoch, i)) if self.augmenter else img

    def __getitem__(self, i: int):
        from mmxai_core.data.dataset import CaseItem

        return CaseItem(image=self.augmented(i), image_present=True, clin_values=self.values[i],
                        clin_missing=self.missing[i], label=int(self.labels[i]), index=int(i))


def bench(cases: int, batch: int, size: int, repeats: int) -> dict:
    from mmxai_core.model import parameter_groups
    from mmxai_core.train.config import TrainConfig
    from mmxai_core.train.device import make_runtime
    from mmxai_core.train.loop import Trainer

    cfg = TrainConfig()
    cfg.train.batch_size, cfg.train.epochs, cfg.data.loader_workers = batch, 1000, 0
    runtime = make_runtime("cpu", "auto")
    data = InMemoryCases(cases, size)
    trainer = Trainer(bench_model(FIELDS10, size, perturb=0.0).train(), data, data, cfg, runtime,
                      class_weights=torch.ones(2))

    plain_model = bench_model(FIELDS10, size, perturb=0.0).train()
    opt = torch.optim.AdamW(parameter_groups(plain_model, 0.05), lr=3e-4, foreach=False)
    state = {"epoch": 0}

    def plain_epoch():
        state["epoch"] += 1
        data.set_epoch(state["epoch"])
        order = torch.randperm(cases, generator=torch.Generator().manual_seed(state["epoch"]))
        for s in range(0, cases, batch):
            idx = order[s:s + batch].tolist()
            images = torch.stack([data.augmented(i) for i in idx])           # (B, 1, 1, H, W)
            logits = plain_model(images, clin_values=data.values[idx], clin_missing=data.missing[idx]).logits
            loss = F.cross_entropy(logits, torch.as_tensor(data.labels[idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(plain_model.parameters(), 1.0)
            opt.step()

    def data_only():
        trainer.sampler.set_epoch(1)
        data.set_epoch(1)
        for _ in trainer.loader:
            pass

    stats = {}

    def mmxai_epoch():
        stats.update(trainer.train_epoch())

    rows = interleaved({"mmxai": mmxai_epoch, "plain": plain_epoch, "data": data_only}, repeats=repeats,
                       warmup=1, reference="mmxai")
    for row in rows.values():
        row["cases_per_s"] = cases / row["median_s"]
    return {"cases": cases, "batch": batch, "size": size, "rows": rows,
            "throughput_ratio_mmxai_vs_plain": rows["plain"]["median_s"] / rows["mmxai"]["median_s"],
            "data_share_of_mmxai_epoch": rows["data"]["median_s"] / rows["mmxai"]["median_s"],
            "last_epoch_timings": {k: stats.get(k) for k in ("data_s", "model_s", "train_s")}}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=int, default=48)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    setup_threads(args.threads)
    res = bench(args.cases, args.batch, args.size, args.repeats)
    for k, r in res["rows"].items():
        print(f"{k:6s} {r['median_s']:.2f} s/epoch  {r['cases_per_s']:.1f} cases/s")
    print(f"mmxai / plain throughput {res['throughput_ratio_mmxai_vs_plain']:.2f}; data share {res['data_share_of_mmxai_epoch']:.2f}")
    write_json(args.json, res)


if __name__ == "__main__":
    main()
