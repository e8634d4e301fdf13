#!/usr/bin/env bash
# Installs what the Temporal cluster (infra/temporal-cluster) needs, and nothing twice: PostgreSQL
# from Debian, and the Temporal server, its SQL schema tool, tdbg and the UI server built from the
# Go module proxy at the versions pinned in versions.env, cached in .tools/. Safe to run again.
#   bash infra/temporal-cluster/setup-cluster.sh [--quiet]
set -euo pipefail
cd "$(dirname "$0")/../.."
QUIET=0; [[ "${1:-}" == "--quiet" ]] && QUIET=1
say() { [[ $QUIET == 1 ]] || echo "setup-cluster: $*"; }
act() { echo "setup-cluster: $*"; }
source infra/temporal-cluster/versions.env

APT_PACKAGES=(postgresql-15 postgresql-client-15 openssl)
# The cluster runs its own PostgreSQL instance; the package's system cluster is not needed.
source infra/ensure-apt-packages.sh
ensure_apt_packages "${APT_PACKAGES[@]}"

SERVER_DIR=.tools/temporal-server-$TEMPORAL_SERVER_VERSION
UI_DIR=.tools/temporal-ui-server-$TEMPORAL_UI_SERVER_VERSION
SERVER_BINS=(ehoff-temporal-server temporal-sql-tool tdbg)
have_all() { local d=$1; shift; for b in "$@"; do [[ -x $d/bin/$b ]] || return 1; done; }
if have_all "$SERVER_DIR" "${SERVER_BINS[@]}" && have_all "$UI_DIR" ehoff-temporal-ui; then
  say "Temporal server $TEMPORAL_SERVER_VERSION and UI server $TEMPORAL_UI_SERVER_VERSION present"
  exit 0
fi

command -v go >/dev/null || { echo "setup-cluster: no Go on PATH (the server is built from the Go module proxy)" >&2; exit 1; }
# Everything Go downloads or compiles stays in the project; the toolchain comes from the proxy.
export GOPATH="$PWD/.cache/go" GOMODCACHE="$PWD/.cache/go/mod" GOCACHE="$PWD/.cache/go/build"
export GOTOOLCHAIN=$GO_TOOLCHAIN GOFLAGS="-modcacherw -buildvcs=false" CGO_ENABLED=0
tmp=$(mktemp -d /tmp/ehoff-cluster-build.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

if ! have_all "$SERVER_DIR" "${SERVER_BINS[@]}"; then
  act "building Temporal server v$TEMPORAL_SERVER_VERSION with $GO_TOOLCHAIN (about 8 minutes on 2 cores, once)"
  # The SQL tool carries the module's schema/postgresql/v12 embedded (--schema-name).
  (cd "$tmp" && GOBIN="$tmp/server-bin" go install "go.temporal.io/server/cmd/server@v$TEMPORAL_SERVER_VERSION" \
    "go.temporal.io/server/cmd/tools/sql@v$TEMPORAL_SERVER_VERSION" "go.temporal.io/server/cmd/tools/tdbg@v$TEMPORAL_SERVER_VERSION")
  mkdir -p "$SERVER_DIR/bin"
  mv "$tmp/server-bin/server" "$SERVER_DIR/bin/ehoff-temporal-server"
  mv "$tmp/server-bin/sql" "$SERVER_DIR/bin/temporal-sql-tool"
  mv "$tmp/server-bin/tdbg" "$SERVER_DIR/bin/tdbg"
fi

if ! have_all "$UI_DIR" ehoff-temporal-ui; then
  act "building Temporal UI server v$TEMPORAL_UI_SERVER_VERSION (its web assets are embedded in the module; about a minute)"
  (cd "$tmp" && GOBIN="$tmp/ui-bin" go install "github.com/temporalio/ui-server/v2/cmd/server@v$TEMPORAL_UI_SERVER_VERSION")
  mkdir -p "$UI_DIR/bin"
  mv "$tmp/ui-bin/server" "$UI_DIR/bin/ehoff-temporal-ui"
fi
say "Temporal server $TEMPORAL_SERVER_VERSION and UI server $TEMPORAL_UI_SERVER_VERSION built"
