"""The retrieval benchmark's JSON results as tables and as the README's sentences (no number typed by hand)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


__all__ = ["retrieval_benchmark", "retrieval_scaling_text"]


def retrieval_benchmark(sources) -> pd.DataFrame:
    """The rows of ``benchmarks/bench_retrieval.py`` result files as one tidy frame.

    ``sources``: one path or parsed JSON payload, or a sequence of them. Columns: every per-configuration column
    the benchmark writes (``configuration, strategy, short_label, db_size, speedup, map_ratio, ...``) plus
    ``source`` (``trained codes`` when the benchmark grew the codes of a run, else ``synthetic codes``),
    ``command`` and ``file``.
    """
    import json

    if isinstance(sources, (str, Path, dict)):
        sources = [sources]
    frames = []
    for source in sources:
        payload = source if isinstance(source, dict) else json.loads(Path(source).read_text())
        if "runs" not in payload:
            raise KeyError(f"{source if not isinstance(source, dict) else 'payload'} is not a bench_retrieval "
                           "result: it has no 'runs'")
        for run in payload["runs"]:
            frame = pd.DataFrame(run["results"])
            kind = run.get("data", {}).get("kind", "synthetic")
            frame["source"] = "trained codes" if kind == "file" else "synthetic codes"
            frame["command"] = payload.get("command", "")
            frame["file"] = "" if isinstance(source, dict) else Path(source).name
            frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def retrieval_scaling_text(bench: pd.DataFrame, source: str = "trained codes",
                           shortlist: str = "shortlist 16→128, s=1000",
                           table: str = "shortlist_table 16→128, s=1000, precomputed table") -> str:
    """One Markdown sentence per database size of ``source`` with the speed-ups of the computed shortlist and of
    the precomputed table over exhaustive search and their mAP ratio, straight from the benchmark rows (so a
    notebook or README never carries a number the benchmark does not hold). Empty when the rows are missing."""
    if bench.empty:
        return ""
    rows = bench[bench["source"] == source]
    lines = []
    for size, group in rows.groupby("db_size", sort=True):
        by = group.set_index("configuration")
        if shortlist not in by.index or table not in by.index:
            continue
        a, b = by.loc[shortlist], by.loc[table]
        lines.append(f"- {int(size):,} items: the computed shortlist {_times(a['speedup'])} and the precomputed table "
                     f"{_times(b['speedup'])} the speed of exhaustive search, at {a['map_ratio']:.1%} and "
                     f"{b['map_ratio']:.1%} of its mAP@{int(a['k'])}.")
    return "\n".join(lines)


def _times(value: float) -> str:
    return f"{value:.0f}×" if value >= 10 else f"{value:.2g}×"
