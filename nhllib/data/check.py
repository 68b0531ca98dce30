"""``python -m nhllib.data.check --profile NAME``: fail early, with instructions, when a profile's data is missing.

Loads every dataset the profile's runs use (and so draws and saves their splits) before any run starts.
"""

from __future__ import annotations

import argparse
import sys

from nhllib.data import SplitSpec, load_hashing_data


def main(argv: list[str] | None = None) -> int:
    from nhllib.study import load_profile

    parser = argparse.ArgumentParser(prog="python -m nhllib.data.check", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", required=True)
    args = parser.parse_args(argv)
    try:
        profile = load_profile(args.profile)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    seen = set()
    for cfg in profile.configs:
        key = (cfg.dataset, cfg.data_dir, cfg.split_seed, cfg.query_per_class, cfg.train_per_class,
               cfg.val_per_class, cfg.database_per_class)
        if key in seen:
            continue
        seen.add(key)
        try:
            data = load_hashing_data(
                cfg.dataset, data_dir=cfg.data_dir, seed=cfg.split_seed, image_size=cfg.image_size,
                split=SplitSpec(cfg.query_per_class, cfg.train_per_class, cfg.val_per_class, cfg.database_per_class),
            )
        except (FileNotFoundError, RuntimeError, ValueError) as err:
            print(f"error: the data of profile {args.profile!r} is not reachable:\n{err}", file=sys.stderr)
            return 2
        print(f"data ok: {cfg.dataset} from {data.source}, split sizes {data.sizes()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
