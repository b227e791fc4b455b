#!/usr/bin/env bash
# Make BCC able to compile and attach: kernel headers at /lib/modules/$(uname -r)/build and
# tracefs mounted. Idempotent; run as root by `make run` and `make test`.
set -euo pipefail
release=$(uname -r)
modules=/lib/modules/$release
arch=$(dpkg --print-architecture)

if [ ! -e "$modules/build/Makefile" ]; then
    # A distribution kernel has a matching package; a custom kernel (VMs, Firecracker) does not,
    # and BCC then compiles against the distribution's headers, which works for tracepoints.
    if ! apt-get install -y -q --no-install-recommends "linux-headers-$release" >/dev/null 2>&1; then
        apt-get install -y -q --no-install-recommends "linux-headers-$arch" >/dev/null
        build=$(ls -d /usr/src/linux-headers-*-"$arch" 2>/dev/null | sort -V | tail -n 1)
        common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n 1)
        if [ -z "$build" ]; then
            echo "no kernel headers found under /usr/src after installing linux-headers-$arch" >&2
            exit 1
        fi
        mkdir -p "$modules"
        ln -sfn "$build" "$modules/build"
        ln -sfn "${common:-$build}" "$modules/source"
        echo "linked $modules/build -> $build (no headers packaged for $release)"
    fi
fi

if [ -z "$(ls -A /sys/kernel/tracing 2>/dev/null)" ]; then
    mount -t tracefs tracefs /sys/kernel/tracing
fi
if [ ! -d /sys/kernel/tracing/events/syscalls ]; then
    echo "tracefs has no syscall tracepoints: the kernel needs CONFIG_FTRACE_SYSCALLS" >&2
    exit 1
fi
