"""``python -m nhllib.study.pretrain PROFILE``: pretrain (or find in the cache) every backbone the runs of a
profile start from, and print each one's linear-probe accuracy; ``--list`` only lists the cache (writes nothing).

The runs themselves pretrain on first use (:func:`nhllib.training.pretrain.starting_backbone`); this command does it ahead
of a study, one entry at a time, so that parallel runs never wait on each other's pretraining.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from nhllib.data import load_data
from nhllib.store.results import atomic_write_text
from nhllib.study.profile import load_profile
from nhllib.training.pretrain import RECORD, PretrainSpec, cache_root, entry_complete, ensure_pretrained, pretrain_spec
from nhllib.weight_sources import pool_labels


def _profile_specs(profile) -> list[tuple[Any, PretrainSpec]]:
    specs: dict[str, tuple[Any, PretrainSpec]] = {}
    shapes: dict[Any, tuple[int, int]] = {}
    for cfg in profile.configs:
        if pool_labels(cfg.model.pretrained) is None:
            continue
        if cfg.data not in shapes:
            data = load_data(cfg.data)
            shapes[cfg.data] = (data.in_channels, data.image_size)
        spec = pretrain_spec(cfg, *shapes[cfg.data])
        specs.setdefault(spec.name, (cfg, spec))
    return list(specs.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nhllib.study.pretrain", description="Pretrain (or find in the cache) every backbone the runs of a profile start from, and print each one's linear-probe accuracy.")
    parser.add_argument("profile", help="a profile name under studies/ or the path of a .yaml file")
    parser.add_argument("--csv", metavar="PATH",
                        help="also write one row per backbone (name, backbone, labels, linear-probe accuracy, random-"
                             "init probe, pool images, training seconds) to this CSV, e.g. "
                             "results/regimes/tables/pretrained_backbones.csv (what the README's regimes section cites)")
    parser.add_argument("--list", action="store_true",
                        help="only list the cached entries under the profile's data_dir (writes nothing)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        profile = load_profile(args.profile)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.list:  # read-only: computing the specs could write a missing split file
        for root in sorted({cache_root(cfg.data.data_dir) for cfg in profile.configs}):
            for folder in sorted(root.glob("*")) if root.is_dir() else []:
                record = json.loads((folder / RECORD).read_text()) if entry_complete(folder) else None
                print(f"{folder}: " + (f"linear probe {record['probe_accuracy']:.4f}" if record else "incomplete"))
        return 0
    specs = _profile_specs(profile)
    if not specs:
        print(f"profile {profile.name!r} names no pool-pretrained backbone")
    rows = []
    for cfg, spec in specs:
        with torch.random.fork_rng(devices=[]):
            entry = ensure_pretrained(spec, load_data(cfg.data))
        r = entry.record
        print(f"{spec.name}: linear probe {r['probe_accuracy']:.4f} (random init {r['probe_accuracy_random_init']:.4f})"
              f", {r['pool']['images']} pool images, {r['train_time_s']:.0f} s"
              f" ({'trained now' if entry.trained_now else 'cached'})")
        rows.append({"name": spec.name, "backbone": spec.backbone, "labels": spec.labels, "recipe": spec.recipe,
                     "seed": spec.seed, "probe_accuracy": r["probe_accuracy"],
                     "probe_accuracy_random_init": r["probe_accuracy_random_init"],
                     "pool_images": r["pool"]["images"], "train_time_s": r["train_time_s"],
                     "git_commit": r.get("git_commit")})
    if args.csv:
        target = Path(args.csv)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, pd.DataFrame(rows).to_csv(index=False))
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
