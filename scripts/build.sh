#!/bin/bash
# Builds blockjobd.  Configures a directory only when it is not configured
# yet; ninja re-runs meson by itself when a meson.build changed.  Every build
# here turns warnings into errors (-Dwerror=true): the developer's and CI's
# promise of zero warnings.  A user's plain `meson setup` does not.
#   scripts/build.sh                  normal and asan (what the suite runs)
#   scripts/build.sh normal           build/: debugoptimized, gcc
#   scripts/build.sh asan             build-asan/: AddressSanitizer + UBSan
#   scripts/build.sh release          build-release/: --buildtype=release, gcc
#   scripts/build.sh release-clang    build-release-clang/: the same with clang
#   scripts/build.sh tsan             build-tsan/: ThreadSanitizer (never part of
#                                     the default: only test.sh --tsan wants it)
# Several names may be given: scripts/build.sh normal asan release
set -euo pipefail
cd "$(dirname "$0")/.."

which=("$@")
[ ${#which[@]} -gt 0 ] || which=(normal asan)

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

for w in "${which[@]}"; do
    case "$w" in
    all|normal) setup build -Dwerror=true ;;&
    all|asan)   setup build-asan -Dwerror=true -Db_sanitize=address,undefined \
                    -Db_lundef=false ;;&
    tsan)       setup build-tsan -Dwerror=true -Db_sanitize=thread \
                    -Db_lundef=false ;;
    release)    setup build-release -Dwerror=true -Dbuildtype=release ;;
    release-clang)
                CC=clang setup build-release-clang -Dwerror=true \
                    -Dbuildtype=release ;;
    all|normal|asan) ;;
    *) echo "build.sh: unknown build '$w'" >&2; exit 2 ;;
    esac
done
