#!/usr/bin/env bash
# Set up without running anything: the Python environment (.venv, or an active conda env / virtualenv that has
# nhllib) and Fashion-MNIST (scripts/get_data.sh). ./run_tests.sh and ./run_all.sh do the same before they start.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
ensure_env
NHL_PYTHON="$NHL_PYTHON" scripts/get_data.sh
echo "ready. Open the tour with: $(dirname "$NHL_PYTHON")/jupyter lab notebooks/00_tour.ipynb   (as root add --allow-root)"
