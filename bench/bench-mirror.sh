#!/bin/sh
# blockdev-mirror sync=full of a 1 GiB raw image (512 MiB random data, 512
# MiB hole) into a fresh qcow2, to READY and to completion, blockjobd and
# qemu-storage-daemon 7.2 alternating: the mirror part of bench/compare.sh.
#
#   bench/bench-mirror.sh [compare.sh options: --rounds N, --bj BINARY, ...]
exec "$(dirname "$0")/compare.sh" --jobs mirror "$@"
