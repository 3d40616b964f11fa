#!/bin/bash
# Builds blockjobd twice: build/ (normal) and build-asan/ (AddressSanitizer
# + UndefinedBehaviorSanitizer).  Configures a directory only when it is not
# configured yet; ninja re-runs meson by itself when a meson.build changed.
#   scripts/build.sh            both
#   scripts/build.sh normal     build/ only
#   scripts/build.sh asan       build-asan/ only
#   scripts/build.sh tsan       build-tsan/ only (ThreadSanitizer; never
#                               part of "both": only test.sh --tsan wants it)
set -euo pipefail
cd "$(dirname "$0")/.."

which=${1:-all}

# Prints the options among "-Dname=value ..." that dir has set differently.
changed_options() {
    local dir=$1; shift
    meson introspect "$dir" --buildoptions | /usr/bin/python3 -c '
import json, sys
have = {o["name"]: o["value"] for o in json.load(sys.stdin)}
for arg in sys.argv[1:]:
    name, value = arg[2:].split("=", 1)
    cur = have.get(name)
    cur = ",".join(cur) if isinstance(cur, list) else str(cur).lower()
    if cur != value:
        print(arg)
' "$@"
}

setup() {
    local dir=$1; shift
    if [ ! -f "$dir/build.ninja" ]; then
        meson setup "$dir" "$@"
    elif ! meson introspect "$dir" --buildoptions >/dev/null 2>&1; then
        meson setup --wipe "$dir" "$@"
    elif [ $# -gt 0 ] && [ -n "$(changed_options "$dir" "$@")" ]; then
        meson configure "$dir" "$@"
    fi
    ninja -C "$dir"
}

if [ "$which" = all ] || [ "$which" = normal ]; then
    setup build
fi
if [ "$which" = all ] || [ "$which" = asan ]; then
    setup build-asan -Db_sanitize=address,undefined -Db_lundef=false
fi
# Not in "all": a third full build would slow every plain build.sh for a
# mode only scripts/test.sh --tsan uses.
if [ "$which" = tsan ]; then
    setup build-tsan -Db_sanitize=thread -Db_lundef=false
fi
