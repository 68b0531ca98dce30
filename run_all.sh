#!/usr/bin/env bash
# Regenerate the study: ./run_all.sh [smoke|default|full|paper] [driver options]   (default profile: default)
#   driver options (python -m nhllib.study --help): --results DIR, --jobs N, --analysis-only, --list
# Creates the environment on first use, checks the data, runs every missing run of the profile's grid
# (studies/<profile>.yaml) through papermill, then the analysis notebooks. Resumable: complete runs are skipped.
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
"$NHL_PYTHON" -m nhllib.check_data --profile "$profile"
start=$(date +%s)
status=0
"$NHL_PYTHON" -m nhllib.study "$profile" "$@" || status=$?
echo "run_all.sh $profile: $(( $(date +%s) - start )) s, exit status $status"
exit $status
