#!/bin/bash
# Puts the build's blockjobd and bjctl on PATH: symbolic links in DIR to
# build/src/daemon/blockjobd and build/src/ctl/bjctl, so they follow every
# rebuild.  DIR defaults to /usr/local/bin as root, ~/.local/bin otherwise.
# Only links are replaced: a program a `meson install` put there is left
# alone (with a note).  scripts/demo.sh runs this after building.
#   scripts/link-bin.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${1:-}
if [ -z "$dir" ]; then
    if [ "$(id -u)" -eq 0 ]; then
        dir=/usr/local/bin
    else
        dir=$HOME/.local/bin
    fi
fi
mkdir -p "$dir"

for b in build/src/daemon/blockjobd build/src/ctl/bjctl; do
    target=$PWD/$b
    link=$dir/$(basename "$b")
    if [ ! -x "$target" ]; then
        echo "link-bin: $target is not built (scripts/build.sh normal)" >&2
        exit 1
    fi
    if [ -e "$link" ] && [ ! -L "$link" ]; then
        echo "link-bin: $link is not a link (installed?): left as it is"
        continue
    fi
    ln -sfn "$target" "$link"
done

case ":$PATH:" in
*":$dir:"*) echo "link-bin: blockjobd and bjctl are on PATH (in $dir)" ;;
*)          echo "link-bin: blockjobd and bjctl are in $dir;" \
                 "add it to PATH: export PATH=\"$dir:\$PATH\"" ;;
esac
