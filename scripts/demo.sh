#!/bin/bash
# Installs what is missing, builds blockjobd, puts blockjobd and bjctl on
# PATH (scripts/link-bin.sh), and runs the demo: start the
# daemon on an image it creates, talk QMP, show the node graph, quit cleanly;
# then a live backup and a live mirror (pivoted) under an NBD writer, driven
# by bjctl and checked with qemu-img compare (scripts/demo-jobs.py).
# Extra arguments go to scripts/demo.py (--keep keeps the demo directory).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh
./scripts/build.sh normal
./scripts/link-bin.sh
/usr/bin/python3 scripts/demo.py --bin build/src/daemon/blockjobd "$@"
# then the main job: live backup and mirror under a writer, with bjctl
exec /usr/bin/python3 scripts/demo-jobs.py --bin build/src/daemon/blockjobd \
    --bjctl build/src/ctl/bjctl "$@"
