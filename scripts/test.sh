#!/bin/bash
# Installs what is missing, builds (normal and ASan+UBSan) and runs the whole
# suite: unit tests and integration tests, once per build.  The last line is
# "N passed, N failed, N skipped" over everything that ran.  It also compiles
# the release build with gcc and with clang (warnings are errors there too),
# so what a packager builds stays free of warnings.
# Extra arguments go to tests/run-suite.py (e.g. --only normal -- -k daemon).
#
# Two slower checking modes, never part of the default run:
#   scripts/test.sh --valgrind [ARGS]   build/ with every daemon and unit test
#                                       under valgrind's memcheck
#   scripts/test.sh --tsan [ARGS]       build-tsan/ (ThreadSanitizer): unit
#                                       and integration tests
# ARGS go to tests/run-suite.py too (e.g. --tsan --no-unit -- -k iothread).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=
case "${1:-}" in
    --valgrind) mode=valgrind; shift ;;
    --tsan) mode=tsan; shift ;;
esac

./scripts/deps.sh
case "$mode" in
    valgrind)
        ./scripts/build.sh normal
        exec /usr/bin/python3 tests/run-suite.py --only valgrind "$@" ;;
    tsan)
        ./scripts/build.sh tsan
        exec /usr/bin/python3 tests/run-suite.py --only tsan "$@" ;;
esac
./scripts/build.sh normal asan release release-clang
exec /usr/bin/python3 tests/run-suite.py "$@"
