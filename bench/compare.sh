#!/bin/sh
# One command for the whole picture: every job type and the NBD workloads,
# blockjobd and qemu-storage-daemon 7.2 alternating, medians, one table.
# See bench/compare.py (or `bench/compare.sh --help`) for the options.
exec /usr/bin/python3 "$(dirname "$0")/compare.py" "$@"
