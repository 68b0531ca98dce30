"""The processor a measurement ran on, for the provenance of benchmark reports (standard library only, so that the
bare-machine benchmark can use it before any environment exists)."""

from __future__ import annotations

import platform
from pathlib import Path

__all__ = ["cpu_name"]


def cpu_name(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU model from ``cpuinfo`` (Linux), else what :func:`platform.processor` says, else ``"unknown"``."""
    info = Path(cpuinfo)
    try:
        for line in info.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
