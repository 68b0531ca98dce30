#!/usr/bin/env bash
# Regenerate the study: ./run_all.sh [smoke|default|full|gpu|paper|PATH.yaml] [driver options]   (default profile: default)
#   driver options (python -m nhllib.study --help): --results DIR, --jobs N, --analysis-only, --list,
#   --executor slurm (a Slurm job array through submitit; --partition, --gpus-per-run, --time-min, ...)
#   Relative paths (a profile file, --results) are relative to the directory you call it from.
#   SIGTERM / SIGINT (kill PID, Ctrl-C) stop the driver and every notebook it started; rerun the same command to
#   resume (complete runs are kept). A second run_all.sh on the same results folder stops at once, naming the first.
# Creates the environment on first use, fetches Fashion-MNIST when missing (scripts/get_data.sh), checks the data, runs every missing run of the profile's grid
# (studies/<profile>.yaml) through papermill, then the analysis notebooks. Resumable: complete runs are skipped.
# The default profile then renders the executed tour and exercises into docs/rendered/ (scripts/render_docs.sh;
# NHL_RENDER_DOCS=0 skips it) and regenerates the README's findings block from results/tables (python -m nhllib.findings).
set -euo pipefail
caller=$PWD
profile=${1:-default}
shift || true
case "$profile" in
  *.yaml|*.yml) profile=$(cd "$(dirname "$profile")" && pwd)/$(basename "$profile") ;;  # a profile file, made absolute
esac
cd "$(dirname "$0")"
project=$PWD
if [ ! -f "$profile" ] && [ ! -f "studies/$profile.yaml" ]; then
  echo "error: unknown profile '$profile'; available: $(cd studies && ls *.yaml | sed 's/\.yaml$//' | tr '\n' ' ')" >&2
  exit 2
fi
source scripts/env.sh
ensure_env
NHL_PYTHON="$NHL_PYTHON" scripts/get_data.sh --profile "$profile"
"$NHL_PYTHON" -m nhllib.check_data --profile "$profile"
start=$(date +%s)
status=0
# The driver runs in the background and this shell waits for it, so that a signal sent to this script reaches the
# driver (a shell waiting on a foreground child would die alone and leave it running); the driver ends its
# notebooks. It runs in the caller's directory, so that a relative --results means what the caller meant.
# NHL_STOP_WITH_PID: the driver asks for SIGTERM when this script dies, so even a kill -9 of it stops the study.
driver=
stop() {
  trap '' TERM INT
  echo "run_all.sh: $1 received, stopping the study ..." >&2
  [ -n "$driver" ] && kill -TERM "$driver" 2>/dev/null || true
  [ -n "$driver" ] && wait "$driver" 2>/dev/null || true
  echo "run_all.sh: stopped; rerun the same command to resume (complete runs are kept)" >&2
  exit "$2"
}
trap 'stop SIGTERM 143' TERM
trap 'stop SIGINT 130' INT
(cd "$caller" && NHL_STOP_WITH_PID=$$ PYTHONPATH="$project${PYTHONPATH:+:$PYTHONPATH}" exec "$NHL_PYTHON" -m nhllib.study "$profile" "$@") &
driver=$!
wait "$driver" || status=$?
driver=
if [ "$status" -eq 0 ] && [ "$profile" = default ] && [ "${NHL_RENDER_DOCS:-1}" = 1 ]; then
  NHL_PYTHON="$NHL_PYTHON" scripts/render_docs.sh || status=$?  # the executed tour and exercises under docs/rendered/
fi
if [ "$status" -eq 0 ] && [ "$profile" = default ] && [[ " $* " != *" --results"* ]]; then
  # the README's generated findings block, from the tables just written (a prose number not in its tables is listed)
  "$NHL_PYTHON" -m nhllib.findings || echo "run_all.sh: README findings: numbers to check are listed above" >&2
fi
echo "run_all.sh $profile: $(( $(date +%s) - start )) s, exit status $status"
exit $status
