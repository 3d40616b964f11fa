#!/bin/bash
# Installs what is missing, builds blockjobd, and runs the demo: start the
# daemon on an image it creates, talk QMP, show the node graph, quit cleanly.
# Extra arguments go to scripts/demo.py (--keep keeps the demo directory).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh
./scripts/build.sh normal
exec /usr/bin/python3 scripts/demo.py --bin build/src/daemon/blockjobd "$@"
