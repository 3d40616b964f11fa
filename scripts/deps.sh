#!/bin/bash
# Installs the Debian 12 packages blockjobd needs to build, test and demo.
# Idempotent: asks apt only for what is missing, and refreshes the package
# lists only then.  Works as root with no terminal.
set -euo pipefail

PACKAGES=(
    meson ninja-build pkg-config gcc clang
    liburing-dev libjansson-dev zlib1g-dev libcmocka-dev libnbd-dev
    python3 python3-pytest python3-pytest-timeout python3-libnbd
    libnbd-bin nbdkit fio qemu-utils qemu-system-common valgrind
    libgnutls28-dev gnutls-bin  # NBD TLS; certtool/psktool for its tests
    clang libclang-rt-14-dev    # scripts/fuzz.sh: libFuzzer
    libfuse3-dev fuse3          # FUSE exports (fusermount3)
    librbd-dev librados-dev     # driver=rbd
    ceph-mon ceph-osd ceph-common qemu-block-extra  # scripts/ceph-cluster.sh, rbd: in tests
)

missing=()
for p in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    if [ "$status" != "install ok installed" ]; then
        missing+=("$p")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "deps: all ${#PACKAGES[@]} packages present"
    exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null; then
        SUDO=(sudo)
    else
        echo "deps: missing ${missing[*]}; run as root to install them" >&2
        exit 1
    fi
fi

echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -q
"${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" \
    </dev/null
