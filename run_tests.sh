#!/usr/bin/env bash
# Run the test suite; create the environment first when it is missing.
#   ./run_tests.sh            unit tests + notebook smoke runs
#   ./run_tests.sh -m "not slow"   unit tests only (any pytest arguments pass through)
set -euo pipefail
cd "$(dirname "$0")"
source scripts/env.sh
ensure_env
exec "$NHL_PYTHON" -m pytest "$@"
