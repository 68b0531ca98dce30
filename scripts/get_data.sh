#!/usr/bin/env bash
# Make Fashion-MNIST reachable for nhllib, the first way that works:
#   0. it is already found where nhllib looks ($NHL_DATA_DIR, data/fashion-mnist/, the Debian folder);
#   1. apt is usable (root, or sudo without a password): apt-get update, then the Debian package
#      dataset-fashion-mnist (installs /usr/share/datasets/fashion-mnist);
#   2. torchvision downloads it into data/fashion-mnist/ (needs internet once);
#   3. otherwise: one message with the one command to run, exit status 1.
# Called by run_tests.sh and run_all.sh once the Python environment exists; runs on its own too:
#   scripts/get_data.sh                   (uses $NHL_PYTHON, else python3, which must import nhllib)
#   scripts/get_data.sh --profile NAME    only acts when the runs of studies/NAME.yaml use Fashion-MNIST
# Switches: NHL_NO_APT=1 skips step 1, NHL_NO_DOWNLOAD=1 skips step 2; NHL_SYSTEM_FASHION_MNIST_DIR replaces
# the Debian folder (the tests point it at an empty folder to hide an installed copy).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${NHL_PYTHON:-python3}
data_dir=${NHL_GET_DATA_DIR:-data}

if [ "${1:-}" = "--profile" ]; then
  if ! "$py" - "${2:?--profile needs a profile name}" <<'EOF'
import sys
from nhllib.study import load_profile
sys.exit(0 if any(cfg.data.dataset == "fashion-mnist" for cfg in load_profile(sys.argv[1]).configs) else 1)
EOF
  then
    exit 0  # the profile does not use Fashion-MNIST; its data check says what it needs
  fi
fi

found() {
  "$py" - "$data_dir" <<'EOF'
import logging, sys
logging.disable(logging.CRITICAL)
from nhllib.data import load_fashion_mnist
try:
    pool = load_fashion_mnist(data_dir=sys.argv[1])
except FileNotFoundError:
    sys.exit(1)
print(f"get_data: Fashion-MNIST found in {pool.source}", file=sys.stderr)
EOF
}

if found; then
  exit 0
fi

if [ -z "${NHL_NO_APT:-}" ] && command -v apt-get >/dev/null 2>&1; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo="none"; fi
  fi
  if [ "$sudo" != "none" ]; then
    echo "get_data: Fashion-MNIST not found; installing the Debian package dataset-fashion-mnist ..." >&2
    if $sudo apt-get update -qq >&2 \
        && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dataset-fashion-mnist >&2 && found; then
      exit 0
    fi
    echo "get_data: the Debian package did not make Fashion-MNIST reachable" >&2
  fi
fi

if [ -z "${NHL_NO_DOWNLOAD:-}" ]; then
  echo "get_data: downloading Fashion-MNIST through torchvision into $data_dir/fashion-mnist/ ..." >&2
  if "$py" - "$data_dir" <<'EOF' >&2
import logging, socket, sys
logging.disable(logging.CRITICAL)
from nhllib.data import load_fashion_mnist
socket.setdefaulttimeout(30)
try:
    pool = load_fashion_mnist(data_dir=sys.argv[1], download=True)
except FileNotFoundError as err:
    print(f"get_data: {str(err).split('. Options:')[0]}", file=sys.stderr)
    sys.exit(1)
print(f"get_data: Fashion-MNIST downloaded into {pool.source}", file=sys.stderr)
EOF
  then
    exit 0
  fi
fi

if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then cmd="apt-get update && apt-get install -y dataset-fashion-mnist"
  else cmd="sudo apt-get update && sudo apt-get install -y dataset-fashion-mnist"; fi
else
  cmd="export NHL_DATA_DIR=/folder/holding/the/four/files"
fi
cat >&2 <<EOF

error: Fashion-MNIST is not available, and neither apt nor torchvision's download could get it here.
Run this, then ./run_tests.sh or ./run_all.sh again:

    $cmd

(Or copy the four files train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and
t10k-labels-idx1-ubyte.gz into $data_dir/fashion-mnist/. See data/README.md.)
EOF
exit 1
