#!/bin/bash
# Installs what is missing, builds (normal and ASan+UBSan) and runs the whole
# suite: unit tests and integration tests, once per build.  The last line is
# "N passed, N failed, N skipped" over everything that ran.  It also compiles
# the release build with gcc and with clang (warnings are errors there too),
# so what a packager builds stays free of warnings.
# Extra arguments go to tests/run-suite.py (e.g. --only normal -- -k daemon).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh
./scripts/build.sh normal asan release release-clang
exec /usr/bin/python3 tests/run-suite.py "$@"
