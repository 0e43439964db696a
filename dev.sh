#!/usr/bin/env bash
# The project's two entry points, each doing its own set-up on a fresh machine:
#   ./dev.sh run [gateway args…]   build (console WASM included) and run the gateway;
#                                  with no --config it runs the demo (SQLite + mock provider)
#   ./dev.sh test                  install what the tests need, then run every test suite
# and two helpers:
#   ./dev.sh build                 release build of the gateway, its console assets and the mock upstream
#   ./dev.sh bench                 the latency / throughput benchmark (bench/run)
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/ai-gateway/target}"
export PATH="$HOME/.cargo/bin:$PATH"
CARGO_LEPTOS_VERSION=0.3.6
# cargo-leptos runs wasm-opt on release builds (and would try to download one). Debian's
# binaryen 108 emits a module whose externref table export breaks hydration; the npm
# registry's binaryen 132 is correct.
BINARYEN_VERSION=132
# wasm-bindgen-cli must be the exact version of the wasm-bindgen crate in Cargo.lock.
WASM_BINDGEN_VERSION=$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

log() { printf '\n== %s\n' "$*"; }

setup_rust() {
  mkdir -p "$CARGO_TARGET_DIR" 2>/dev/null || $SUDO mkdir -p "$CARGO_TARGET_DIR"
  [ -w "$CARGO_TARGET_DIR" ] || $SUDO chown -R "$(id -u):$(id -g)" "$CARGO_TARGET_DIR"
  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    log "adding the wasm32 target"
    rustup target add wasm32-unknown-unknown
  fi
  if ! cargo leptos --version 2>/dev/null | grep -qx "cargo-leptos $CARGO_LEPTOS_VERSION"; then
    log "installing cargo-leptos $CARGO_LEPTOS_VERSION (offline build, no downloads at run time; ~12 min once)"
    cargo install "cargo-leptos@$CARGO_LEPTOS_VERSION" --locked --features no_downloads
  fi
  if ! wasm-bindgen --version 2>/dev/null | grep -qx "wasm-bindgen $WASM_BINDGEN_VERSION"; then
    log "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION"
    # Not --locked: its own lockfile pins a crate the registry mirror lacks.
    cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
  fi
  if ! wasm-opt --version 2>/dev/null | grep -q "version $BINARYEN_VERSION "; then
    log "installing wasm-opt (binaryen $BINARYEN_VERSION from npm)"
    $SUDO npm install -g --force "binaryen@$BINARYEN_VERSION.0.0"
  fi
}

# Debian packages the tests use: Chromium for Playwright, the PostgreSQL client tools,
# wrk for the benchmark.
setup_system() {
  local need=()
  command -v chromium >/dev/null || need+=(chromium)
  command -v psql >/dev/null || need+=(postgresql-client)
  command -v pg_dump >/dev/null || need+=(postgresql-client)
  command -v wrk >/dev/null || need+=(wrk)
  # The end-to-end suite's identity provider (npm's oidc-provider) runs on Node.js.
  command -v node >/dev/null || need+=(nodejs)
  command -v npm >/dev/null || need+=(npm)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
  fi
}

# PostgreSQL and Redis on 127.0.0.1, started if they are down.
ensure_services() {
  if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    log "starting PostgreSQL"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
    for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 1; done
  fi
  if command -v redis-cli >/dev/null && ! redis-cli -h 127.0.0.1 ping >/dev/null 2>&1; then
    log "starting Redis"
    $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  fi
}

build() {
  setup_rust
  log "building the gateway and its console (release)"
  cargo leptos build --release
  cargo build --release -p server --bins
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  run)
    build
    export GATEWAY_SITE_ROOT="${GATEWAY_SITE_ROOT:-$ROOT/target/site}"
    exec "$CARGO_TARGET_DIR/release/gateway" "$@"
    ;;
  build)
    build
    ;;
  test)
    setup_system
    ensure_services
    setup_rust
    log "format and lints"
    cargo fmt --all -- --check
    cargo clippy -p server -p app --all-targets -- -D warnings
    cargo clippy -p frontend --target wasm32-unknown-unknown -- -D warnings
    log "old test databases"
    psql -h 127.0.0.1 -U postgres -d postgres -Atc \
      "SELECT 'DROP DATABASE IF EXISTS \"' || datname || '\" WITH (FORCE);' FROM pg_database WHERE datname LIKE 'gwt\\_%' OR datname LIKE 'gwe2e\\_%'" \
      | psql -h 127.0.0.1 -U postgres -d postgres -q >/dev/null
    log "unit and integration tests (SQLite and PostgreSQL)"
    cargo test -p server
    build
    log "end-to-end: official SDKs and Chromium"
    GATEWAY_BIN="$CARGO_TARGET_DIR/release/gateway" MOCK_BIN="$CARGO_TARGET_DIR/release/mock-upstream" \
      GATEWAY_SITE_ROOT="$ROOT/target/site" end2end/run.sh
    ;;
  bench)
    setup_system
    exec bench/run "$@"
    ;;
  *)
    sed -n '2,8p' "$0"
    exit 2
    ;;
esac
