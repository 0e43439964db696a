#!/usr/bin/env bash
# End-to-end suite: real clients (the official `openai` SDK, Chromium through Playwright)
# against the release `gateway` and `mock-upstream` binaries, on SQLite and PostgreSQL.
#
# Expects the release build and the site to exist (`cargo leptos build --release` and
# `cargo build --release -p server --bin mock-upstream`). Paths, all optional:
#   GATEWAY_BIN, MOCK_BIN   default $CARGO_TARGET_DIR/release/{gateway,mock-upstream}
#   GATEWAY_SITE_ROOT       default <repo>/target/site (must contain pkg/)
#   E2E_VENV                default /var/cache/ai-gateway/venv
#   E2E_BACKENDS            default "sqlite,postgres"
# Extra arguments go to pytest (e.g. `end2end/run.sh -k secrets -x`).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/ai-gateway/target}"
export GATEWAY_BIN="${GATEWAY_BIN:-$CARGO_TARGET_DIR/release/gateway}"
export MOCK_BIN="${MOCK_BIN:-$CARGO_TARGET_DIR/release/mock-upstream}"
export GATEWAY_SITE_ROOT="${GATEWAY_SITE_ROOT:-$repo/target/site}"
venv="${E2E_VENV:-/var/cache/ai-gateway/venv}"

# Never let Playwright fetch a browser: the suite drives Debian's /usr/bin/chromium.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
export PYTHONDONTWRITEBYTECODE=1

for bin in "$GATEWAY_BIN" "$MOCK_BIN"; do
    if [[ ! -x "$bin" ]]; then
        echo "end2end: $bin is missing; build first:" >&2
        echo "  cargo leptos build --release && cargo build --release -p server --bin mock-upstream" >&2
        exit 2
    fi
done
if ! compgen -G "$GATEWAY_SITE_ROOT/pkg/*.wasm" >/dev/null; then
    echo "end2end: no $GATEWAY_SITE_ROOT/pkg/*.wasm; run cargo leptos build --release" >&2
    exit 2
fi
if [[ ! -x /usr/bin/chromium ]]; then
    echo "end2end: /usr/bin/chromium is missing (apt-get install chromium)" >&2
    exit 2
fi

# The venv is rebuilt only when requirements.txt changed since it was made.
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/python" || ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    echo "$want" > "$stamp"
fi

cd "$here"
exec "$venv/bin/python" -m pytest "$@"
