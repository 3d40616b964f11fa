#!/bin/sh
# block-stream (chain of three into the top), active and intermediate
# block-commit of a 1 GiB qcow2 chain, blockjobd and qemu-storage-daemon 7.2
# alternating: the stream and commit part of bench/compare.sh.
#
#   bench/bench-stream-commit.sh [compare.sh options: --rounds N, --bj BINARY, ...]
exec "$(dirname "$0")/compare.sh" --jobs stream,commit "$@"
