"""``python -m nhllib.study.check_data --profile NAME``: fail early, with instructions, when a profile's data is missing.

Loads every dataset the profile's runs use (and so draws and saves their splits) before any run starts. It
lives in the study layer because it reads profiles; the data layer knows nothing of studies.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from nhllib.data import load_data
from nhllib.study import load_profile


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nhllib.study.check_data", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", required=True)
    args = parser.parse_args(argv)
    try:
        profile = load_profile(args.profile)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    seen = set()
    for cfg in profile.configs:
        # Batching does not change which images a split holds: one check per split is enough.
        data_cfg = replace(cfg.data, batch_size=64, eval_batch_size=512)
        if data_cfg in seen:
            continue
        seen.add(data_cfg)
        try:
            data = load_data(data_cfg)
        except (FileNotFoundError, RuntimeError, ValueError) as err:
            print(f"error: the data of profile {args.profile!r} is not reachable:\n{err}", file=sys.stderr)
            return 2
        print(f"data ok: {data_cfg.dataset} from {data.source}, split sizes {data.sizes()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
