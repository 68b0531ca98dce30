#!/usr/bin/env bash
# Regenerate the study: ./run_all.sh [smoke|default|full|gpu|paper|regimes|PATH.yaml] [driver options]; ./run_all.sh --help says more
#   driver options (python -m nhllib.study --help): --results DIR, --jobs N, --analysis-only, --list,
#   --executor slurm (a Slurm job array through submitit; --partition, --gpus-per-run, --time-min, ...)
#   Relative paths (a profile file, --results) are relative to the directory you call it from.
#   SIGTERM / SIGINT (kill PID, Ctrl-C) stop the driver and every notebook it started; rerun the same command to
#   resume (complete runs are kept). A second run_all.sh on the same results folder stops at once, naming the first.
# Creates the environment on first use, fetches Fashion-MNIST when missing (scripts/get_data.sh), checks the data, runs every missing run of the profile's grid
# (studies/<profile>.yaml) through papermill, then the analysis notebooks. Resumable: complete runs are skipped.
# The default profile then renders the executed tour and exercises into docs/rendered/ (scripts/render_docs.sh;
# NHL_RENDER_DOCS=0 skips it) and regenerates the README's findings block from results/tables (python -m nhllib.analysis.findings).
set -euo pipefail
# One line per profile for --help (a profile's file says the rest at its top); a new profile without a line here
# is still listed, pointing at its file. tests/test_run_all_help.py checks every studies/*.yaml has a line.
profile_line() {
  case "$1" in
    smoke)     echo "every notebook on tiny data, a few minutes (what the slow tests run)" ;;
    default)   echo "the CPU study: Fashion-MNIST, 10 methods, MLP, 3 seeds, at most 45 min on 2 cores (committed)" ;;
    baselines) echo "how default.yaml's per-method settings were chosen (32-bit separate models), about 10 min" ;;
    full)      echo "10 methods, every variant, a distillation-weight sweep, the CNN: a workstation or GPU, hours" ;;
    paper)     echo "the paper's CIFAR-10 protocol (pretrained ResNet-50, 224 px): needs a GPU and CIFAR-10" ;;
    gpu)       echo "the default grid sized for one GPU (the CNN, the whole database, AMP); refused without CUDA" ;;
    regimes)   echo "pretrained, frozen and CNN backbones beside the default study's MLP (run it first); about 2 h" ;;
    regimes_pilot) echo "the regimes study on tiny data, one seed: a few minutes, to try its pipeline" ;;
    regimes_lr) echo "how regimes.yaml's backbone learning-rate multipliers were chosen (validation mAP)" ;;
    *)         echo "see the comment at the top of studies/$1.yaml" ;;
  esac
}
usage() {
  cat <<USAGE
usage: ./run_all.sh [PROFILE | PATH.yaml] [driver options]      (PROFILE defaults to 'default')
       ./run_all.sh --help | -h              this text; sets nothing up, writes nothing

Runs every missing run of the profile's grid (studies/PROFILE.yaml) through papermill, then the analysis
notebooks; resumable (complete runs are skipped). The first call creates the Python environment (.venv) and
fetches Fashion-MNIST when missing. The default profile then re-renders docs/rendered/ (NHL_RENDER_DOCS=0 skips
it) and the README's findings block.

profiles:
USAGE
  local name
  for name in $(cd studies && ls *.yaml | sed 's/\.yaml$//'); do
    printf '  %-14s %s\n' "$name" "$(profile_line "$name")"
  done
  cat <<'USAGE'

driver options (python -m nhllib.study):
  --results DIR          results root, relative to the current directory (default: results)
  --jobs N               runs at a time, sharing the CPU cores (default 2, or $NHL_JOBS)
  --analysis-only        skip training; rerun the analysis notebooks on the complete runs
  --list                 list the profile's runs and their state, then exit (renders and writes nothing)
  --executor E           local (default) | slurm (a Slurm job array through submitit) | submitit-local
  cluster (with --executor slurm): --partition P, --gpus-per-run N, --cpus-per-run N, --mem-gb G,
                         --time-min M, --array-parallelism N, --account A, --qos Q, --constraint C

examples:
  ./run_all.sh smoke                     check that everything runs (minutes)
  ./run_all.sh default --list            which runs of the default study exist
  ./run_all.sh default --analysis-only   redraw figures and tables from existing runs
  ./run_all.sh my_study.yaml --results /scratch/res --jobs 4

Ctrl-C or kill PID stops the driver and its notebooks; rerun the same command to resume. A second run_all.sh on
the same results folder stops at once, naming the first.
USAGE
}
caller=$PWD
listing=0
for arg in "$@"; do
  case "$arg" in
    -h|--help) cd "$(dirname "$0")" && usage; exit 0 ;;
    --list) listing=1 ;;
  esac
done
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
if [ "$listing" = 1 ]; then  # a listing only reads: no data fetched, no documents rendered, nothing written
  cd "$caller" && PYTHONPATH="$project${PYTHONPATH:+:$PYTHONPATH}" exec "$NHL_PYTHON" -m nhllib.study "$profile" "$@"
fi
NHL_PYTHON="$NHL_PYTHON" scripts/get_data.sh --profile "$profile"
"$NHL_PYTHON" -m nhllib.study.check_data --profile "$profile"
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
  "$NHL_PYTHON" -m nhllib.analysis.findings || echo "run_all.sh: README findings: numbers to check are listed above" >&2
fi
if [ "$status" -eq 0 ] && [ "$profile" = regimes ] && [[ " $* " != *" --results"* ]]; then
  # the starting backbones' probe accuracies beside the study's tables, then the README's regimes block
  "$NHL_PYTHON" -m nhllib.study.pretrain regimes --csv results/regimes/tables/pretrained_backbones.csv >/dev/null \
    && "$NHL_PYTHON" -m nhllib.analysis.regime_findings || status=$?
fi
echo "run_all.sh $profile: $(( $(date +%s) - start )) s, exit status $status"
exit $status
