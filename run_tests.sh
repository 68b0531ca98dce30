#!/usr/bin/env bash
# Run the test suite; create the environment and fetch Fashion-MNIST first when they are missing.
#   ./run_tests.sh            unit tests + notebook smoke runs
#   ./run_tests.sh -m "not slow"   unit tests only (any pytest arguments pass through)
set -euo pipefail
cd "$(dirname "$0")"
source scripts/env.sh
ensure_env
NHL_PYTHON="$NHL_PYTHON" scripts/get_data.sh
exec "$NHL_PYTHON" -m pytest "$@"
