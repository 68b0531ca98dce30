# Shared by run_tests.sh and run_all.sh: find or create the Python environment.
# An active conda env (from environment.yml) or virtualenv that already has nhllib is used as it is;
# otherwise a venv is created in .venv (override with NHL_VENV) and the package installed with its extras.
# torch/torchvision are pinned to the builds this project is tested with; set NHL_TORCH_SPEC to change them.

NHL_TORCH_SPEC=${NHL_TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}

ensure_env() {
  if [ -n "${CONDA_PREFIX:-}${VIRTUAL_ENV:-}" ] && python -c "import nhllib, papermill, pytest" 2>/dev/null; then
    NHL_PYTHON=$(command -v python)
    return
  fi
  local venv=${NHL_VENV:-.venv}
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import nhllib, papermill, pytest, faiss" 2>/dev/null; then
    echo "Setting up the Python environment in $venv (first run only) ..." >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip install -q $NHL_TORCH_SPEC
    "$venv/bin/python" -m pip install -q -e ".[dev]"
    "$venv/bin/python" -m ipykernel install --prefix "$venv" --name python3 >/dev/null
    sha256sum pyproject.toml | cut -d' ' -f1 > "$venv/.nhllib-pyproject.sha256"  # installed just now
  fi
  # A venv made before a dependency was added (pyproject.toml changed since) gets the package's extras again.
  local stamp="$venv/.nhllib-pyproject.sha256" want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    "$venv/bin/python" -m pip install -q -e ".[dev]" && echo "$want" > "$stamp"
  fi
  NHL_PYTHON="$(cd "$venv" && pwd)/bin/python"
  export PATH="$(dirname "$NHL_PYTHON"):$PATH"
}
