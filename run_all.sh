#!/usr/bin/env bash
# Regenerate the study: ./run_all.sh [smoke|default|full|paper] [driver options]   (default profile: default)
#   driver options (python -m nhllib.study --help): --results DIR, --jobs N, --analysis-only, --list,
#   --executor slurm (a Slurm job array through submitit; --partition, --gpus-per-run, --time-min, ...)
# Creates the environment on first use, fetches Fashion-MNIST when missing (scripts/get_data.sh), checks the data, runs every missing run of the profile's grid
# (studies/<profile>.yaml) through papermill, then the analysis notebooks. Resumable: complete runs are skipped.
# The default profile then renders the executed tour and exercises into docs/rendered/ (scripts/render_docs.sh;
# NHL_RENDER_DOCS=0 skips it) and regenerates the README's findings block from results/tables (python -m nhllib.findings).
set -euo pipefail
cd "$(dirname "$0")"
profile=${1:-default}
shift || true
if [ ! -f "studies/$profile.yaml" ]; then
  echo "error: unknown profile '$profile'; available: $(cd studies && ls *.yaml | sed 's/\.yaml$//' | tr '\n' ' ')" >&2
  exit 2
fi
source scripts/env.sh
ensure_env
NHL_PYTHON="$NHL_PYTHON" scripts/get_data.sh --profile "$profile"
"$NHL_PYTHON" -m nhllib.check_data --profile "$profile"
start=$(date +%s)
status=0
"$NHL_PYTHON" -m nhllib.study "$profile" "$@" || status=$?
if [ "$status" -eq 0 ] && [ "$profile" = default ] && [ "${NHL_RENDER_DOCS:-1}" = 1 ]; then
  NHL_PYTHON="$NHL_PYTHON" scripts/render_docs.sh || status=$?  # the executed tour and exercises under docs/rendered/
fi
if [ "$status" -eq 0 ] && [ "$profile" = default ] && [[ " $* " != *" --results"* ]]; then
  # the README's generated findings block, from the tables just written (a prose number not in its tables is listed)
  "$NHL_PYTHON" -m nhllib.findings || echo "run_all.sh: README findings: numbers to check are listed above" >&2
fi
echo "run_all.sh $profile: $(( $(date +%s) - start )) s, exit status $status"
exit $status
