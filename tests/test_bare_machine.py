"""The bare-machine benchmark's bookkeeping: phases split from stamped output, logs free of machine paths."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bare_machine", REPO / "benchmarks" / "bare_machine.py")
bare_machine = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bare_machine)


def test_phases_from_stamped_output():
    stamped = [(0.1, "Setting up the Python environment in .venv (first run only) ..."),
               (98.0, "get_data: Fashion-MNIST not found; installing the Debian package dataset-fashion-mnist ..."),
               (99.5, "Selecting previously unselected package dataset-fashion-mnist."),
               (103.0, "get_data: Fashion-MNIST found in /usr/share/datasets/fashion-mnist"),
               (500.0, "1023 passed, 1 skipped")]
    assert bare_machine.phases(stamped, 506.0) == {"environment_s": 98.0, "data_s": 5.0, "work_s": 403.0,
                                                  "data_obtained_by": "apt"}
    found_at_once = [(2.0, "get_data: Fashion-MNIST found in data/fashion-mnist"), (9.0, "done")]
    assert bare_machine.phases(found_at_once, 10.0) == {"environment_s": 2.0, "data_s": 0.0, "work_s": 8.0,
                                                       "data_obtained_by": "already there"}
    failed = [(1.0, "error: Fashion-MNIST is not available")]
    assert bare_machine.phases(failed, 1.5)["data_s"] is None


def test_log_lines_name_no_path_of_the_machine():
    clone = Path("/tmp/nhllib-bare-x1/nhllib")
    line = ("  /tmp/pip-build-env-ab_c/overlay/lib/python3.11/site-packages/setuptools/editable_wheel.py:354: "
            "warning in /tmp/nhllib-bare-x1/nhllib/nhllib/study.py")
    assert bare_machine._clean(line, clone) == ("  <pip build env>/setuptools/editable_wheel.py:354: "
                                                "warning in ./nhllib/study.py")
