#!/bin/sh
# Configure or compile wirt's minimal guest kernel from an unpacked Linux source tree
# (Debian's linux-source-6.1). crates/image runs this; it works by hand too:
#
#   build-kernel.sh configure SOURCE_DIR BUILD_DIR guest/kernel.config
#   build-kernel.sh compile   SOURCE_DIR BUILD_DIR JOBS
#   -> BUILD_DIR/arch/x86/boot/bzImage
#
# "configure" starts from allnoconfig (everything off) and switches on exactly the options
# in the fragment; crates/image then checks that Kconfig kept every one of them.
# Needs: make gcc flex bison bc libelf-dev libssl-dev (the build's host tools).
set -eu

step=$1 src=$2 out=$3
mkdir -p "$out"
case "$step" in
configure)
    make -C "$src" O="$out" allnoconfig KCONFIG_ALLCONFIG="$4"
    ;;
compile)
    # KBUILD_BUILD_* pin the version string, so the same inputs give the same kernel.
    make -C "$src" O="$out" -j"$4" \
        KBUILD_BUILD_USER=wirt KBUILD_BUILD_HOST=wirt \
        KBUILD_BUILD_TIMESTAMP="1970-01-01" bzImage
    ;;
*)
    echo "usage: $0 configure|compile SOURCE_DIR BUILD_DIR CONFIG|JOBS" >&2
    exit 2
    ;;
esac
