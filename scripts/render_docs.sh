#!/usr/bin/env bash
# Render executed copies of the teaching notebooks into docs/rendered/ (GitHub and JupyterLab show them with
# their outputs): the tour, and the exercises checked against the solutions and against blank answers.
#   scripts/render_docs.sh     (uses $NHL_PYTHON, else python3; Fashion-MNIST must be reachable for the tour)
# run_all.sh calls it after the default study. Outputs are cleaned of run-specific noise (stderr streams,
# execution timings, absolute paths) so that a rerun changes only what the notebooks compute.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${NHL_PYTHON:-python3}
out=docs/rendered
mkdir -p "$out"
render() {  # render <notebook> <output name> [papermill -p args...]
  local src=$1 name=$2
  shift 2
  local start=$SECONDS
  "$py" -m papermill "$src" "$out/$name" --cwd . -k python3 --no-progress-bar --log-level WARNING "$@"
  echo "render_docs: $out/$name ($(( SECONDS - start )) s)" >&2
}
render notebooks/00_tour.ipynb 00_tour.ipynb
render notebooks/05_exercises.ipynb 05_exercises_solutions.ipynb -p use_solutions True
render notebooks/05_exercises.ipynb 05_exercises_blank.ipynb -p use_solutions False
"$py" - "$out" "$PWD" <<'EOF'
import json, sys
from pathlib import Path

folder, root = Path(sys.argv[1]), sys.argv[2]
for path in sorted(folder.glob("*.ipynb")):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        cell.get("metadata", {}).pop("execution", None)
        cell["metadata"].get("papermill", {}).clear()
        if cell["cell_type"] == "code":
            cell["outputs"] = [o for o in cell.get("outputs", []) if o.get("name") != "stderr"]
    keep = {"parameters", "version", "input_path", "default_parameters"}
    nb["metadata"]["papermill"] = {k: v for k, v in nb["metadata"].get("papermill", {}).items() if k in keep}
    text = json.dumps(nb, indent=1, ensure_ascii=False).replace(root + "/", "").replace(root, ".")
    path.write_text(text + "\n")
EOF
