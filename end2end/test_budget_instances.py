"""Budgets across real gateway processes: three `gateway` binaries on one PostgreSQL
database share a key's $1 budget. Fifty parallel requests, each with a worst case of
exactly $0.10 and an upstream slow enough that all of them are in flight together: at most
ten are admitted in all, the rest are refused with `budget_exceeded`, and the recorded
spend never exceeds $1."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import (
    GATEWAY_BIN,
    Gateway,
    _wait_ready,
    free_port,
    start_gateway,
    stop_process,
)
from support import http_request

# Output at $12,500 per million tokens and `max_tokens: 8`, input free: the worst case of
# every request is exactly $0.10.
EXTRA = """
[[deployments]]
model = "e2e-budget-slow"
provider = "openai-compatible"
upstream_model = "slow-1500"
base_url = "{mock}"
api_key = "${{E2E_UPSTREAM_KEY}}"

[[prices]]
model = "e2e-budget-slow"
input_per_mtok = 0.0
output_per_mtok = 12500.0
"""


def admin(gw: Gateway, method: str, path: str, body=None):
    status, _, raw = http_request(
        method, f"{gw.url}/admin/v1{path}", body, headers={"Authorization": f"Bearer {gw.master_key}"}
    )
    return status, json.loads(raw or b"null")


def sibling(first: Gateway) -> tuple[subprocess.Popen, str]:
    """Another gateway process with the first one's configuration and database."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "DATABASE_URL"))}
    env.update(
        DATABASE_URL=first.database.url,
        GATEWAY_MASTER_KEY=first.master_key,
        GATEWAY_SITE_ROOT=os.environ.get("GATEWAY_SITE_ROOT", str(first.workdir)),
        GATEWAY_LOG="info",
        E2E_UPSTREAM_KEY=first.secrets.upstream_key,
        E2E_WRONG_UPSTREAM_KEY=first.secrets.wrong_upstream_key,
    )
    log = open(first.workdir / f"sibling-{port}.stderr", "wb")
    proc = subprocess.Popen(
        [str(GATEWAY_BIN), "--config", str(first.workdir / "gateway.toml"), "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL,
        stderr=log,
        env=env,
    )
    return proc, f"http://127.0.0.1:{port}"


def test_three_processes_share_one_budget(backend, mock_upstream, e2e_secrets, tmp_path):
    if backend != "postgres":
        pytest.skip("several instances share a database on PostgreSQL")
    first = start_gateway(
        backend, mock_upstream, e2e_secrets, tmp_path / "gw", extra_toml=EXTRA.format(mock=mock_upstream.base_url)
    )
    others: list[subprocess.Popen] = []
    try:
        tag = secrets.token_hex(4)
        status, team = admin(first, "POST", "/teams", {"name": f"shared-{tag}"})
        assert status == 201, team
        status, key = admin(first, "POST", "/keys", {"name": "shared", "team_id": team["id"]})
        assert status == 201, key
        status, budget = admin(
            first, "PUT", "/budgets", {"scope_type": "key", "scope_id": key["id"], "amount_usd": 1, "period": "total"}
        )
        assert status == 200, budget
        urls = [first.url]
        for _ in range(2):
            proc, url = sibling(first)
            others.append(proc)
            probe = Gateway(
                backend=backend, url=url, proc=proc, secrets=first.secrets, database=first.database,
                workdir=first.workdir, stderr_path=first.workdir / "sibling.stderr",
            )
            _wait_ready(probe)
            urls.append(url)

        def call(i: int):
            status, _, raw = http_request(
                "POST",
                f"{urls[i % 3]}/v1/chat/completions",
                {"model": "e2e-budget-slow", "max_tokens": 8, "messages": [{"role": "user", "content": "spend"}]},
                headers={"Authorization": f"Bearer {key['key']}"},
            )
            return status, json.loads(raw or b"null")

        with ThreadPoolExecutor(max_workers=50) as pool:
            results = list(pool.map(call, range(50)))
        admitted = [r for r in results if r[0] == 200]
        refused = [r for r in results if r[0] == 429]
        assert len(admitted) + len(refused) == 50, [r[0] for r in results]
        assert 1 <= len(admitted) <= 10, len(admitted)
        for _, body in refused:
            assert body["error"]["code"] == "budget_exceeded", body
        # The key id travels as a psql variable, quoted by psql (:'key'), not pasted in.
        cost = int(
            subprocess.run(
                ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", first.database.name, "-tA",
                 "-v", f"key={key['id']}"],
                input="SELECT COALESCE(SUM(cost_micros), 0) FROM ledger WHERE key_id = :'key';\n",
                capture_output=True, text=True, check=True,
            ).stdout.strip()
        )
        assert 0 < cost <= 1_000_000, cost
    finally:
        for proc in others:
            stop_process(proc)
        first.stop()
        first.database.drop()
