"""scripts/get_data.sh with the data location hidden: found, installed through (a stand-in for) apt, or one
clear message with the command to run. The Debian folder is replaced by an empty one through
``NHL_SYSTEM_FASHION_MNIST_DIR``; ``apt-get`` is a stub script on ``PATH``; no network is used."""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "get_data.sh"
FILES = {"train-images-idx3-ubyte.gz": (40, 28, 28), "train-labels-idx1-ubyte.gz": (40,),
         "t10k-images-idx3-ubyte.gz": (20, 28, 28), "t10k-labels-idx1-ubyte.gz": (20,)}

# Each test runs scripts/get_data.sh (bash, then Python in a subprocess): script runs, about 2 s each, in the slow set.
pytestmark = [pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash"), pytest.mark.slow]


def write_fake_fashion(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, shape in FILES.items():
        array = rng.integers(0, 10 if len(shape) == 1 else 256, size=shape, dtype=np.uint8)
        header = struct.pack(">BBBB", 0, 0, 0x08, len(shape)) + struct.pack(f">{len(shape)}I", *shape)
        with gzip.open(folder / name, "wb") as f:
            f.write(header + array.tobytes())


def run_script(tmp_path: Path, *, apt: str | None, extra_env: dict | None = None, args: tuple = ()):
    """Run get_data.sh with an empty Debian folder, a fresh data dir and (optionally) a stub apt-get."""
    system = tmp_path / "system"
    system.mkdir(exist_ok=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if apt is not None:
        stub = bin_dir / "apt-get"
        stub.write_text("#!/usr/bin/env bash\n" + apt)
        stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "NHL_DATA_DIR"}
    env.update({
        "NHL_PYTHON": sys.executable,
        "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        "NHL_SYSTEM_FASHION_MNIST_DIR": str(system),
        "NHL_GET_DATA_DIR": str(tmp_path / "data"),
        "NHL_NO_DOWNLOAD": "1",
        "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}",
        **(extra_env or {}),
    })
    if apt is None:
        env["NHL_NO_APT"] = "1"
    return subprocess.run([shutil.which("bash"), str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120)


def test_found_in_the_project_data_dir_does_nothing_else(tmp_path):
    write_fake_fashion(tmp_path / "data" / "fashion-mnist")
    out = run_script(tmp_path, apt="echo APT CALLED; exit 1\n")
    assert out.returncode == 0, out.stderr
    assert "found in" in out.stderr and "APT CALLED" not in out.stdout + out.stderr


def test_found_through_nhl_data_dir(tmp_path):
    write_fake_fashion(tmp_path / "mine")
    out = run_script(tmp_path, apt=None, extra_env={"NHL_DATA_DIR": str(tmp_path / "mine")})
    assert out.returncode == 0, out.stderr
    assert str(tmp_path / "mine") in out.stderr


def test_hidden_data_is_installed_through_apt(tmp_path):
    # The stub plays the Debian package: `update` succeeds, `install dataset-fashion-mnist` writes the files
    # into the (replaced) Debian folder.
    (tmp_path / "bin").mkdir()
    installer = tmp_path / "bin" / "install_fake.py"
    installer.write_text(f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
                         f"from pathlib import Path\nfrom test_get_data import write_fake_fashion\n"
                         f"write_fake_fashion(Path({str(tmp_path / 'system')!r}))\n")
    apt = ('echo "apt-get $*" >> "$(dirname "$0")/calls"\n'
           f'case "$*" in *install*dataset-fashion-mnist*) "{sys.executable}" "{installer}" ;; esac\n')
    out = run_script(tmp_path, apt=apt)
    assert out.returncode == 0, out.stderr
    calls = (tmp_path / "bin" / "calls").read_text().splitlines()
    assert calls[0].startswith("apt-get update") and "install" in calls[1] and "dataset-fashion-mnist" in calls[1]
    assert "found in" in out.stderr and str(tmp_path / "system") in out.stderr


def test_nothing_works_gives_one_command(tmp_path):
    out = run_script(tmp_path, apt="exit 100\n")  # apt present but failing (no network, say), no download
    assert out.returncode == 1
    lines = out.stderr.splitlines()
    assert any(line.startswith("error: Fashion-MNIST is not available") for line in lines)
    commands = [line.strip() for line in lines if line.startswith("    ")]
    assert len(commands) == 1 and "apt-get install -y dataset-fashion-mnist" in commands[0]
    assert "Traceback" not in out.stderr


def test_without_apt_the_command_names_the_data_dir_variable(tmp_path):
    # A PATH holding only the few tools the script needs, so that no apt-get is found.
    tools = tmp_path / "tools"
    tools.mkdir()
    for name in ("dirname", "id", "cat", "env"):
        (tools / name).symlink_to(shutil.which(name))
    out = run_script(tmp_path, apt=None, extra_env={"PATH": str(tools)})
    assert out.returncode == 1, out.stderr
    assert "apt-get" not in out.stderr.split("Run this")[1].splitlines()[2]
    assert "export NHL_DATA_DIR=" in out.stderr


def test_profile_without_fashion_mnist_is_left_alone(tmp_path):
    out = run_script(tmp_path, apt="exit 100\n", args=("--profile", "paper"))
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
