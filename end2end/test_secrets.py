"""Secrets stay inside the gateway: upstream keys (the right one and a wrong one the upstream
refuses and echoes back), the master key and the admin password never show up in an error
body, the gateway's log, or the database — on disk for SQLite, in `pg_dump` and the ledger
and audit rows for PostgreSQL."""

from __future__ import annotations

import json

import openai
import pytest

from conftest import CHAT_MODEL, EMBED_MODEL, WRONG_KEY_MODEL
from support import ConsoleSession, find_secrets, sse_text, wait_for

MESSAGES = [{"role": "user", "content": "Is my key safe with you"}]


def upstream_auth_failures(gateway, mock_upstream) -> list[str]:
    """Calls the deployment whose upstream key is wrong, streamed and not; each must be a
    502 in OpenAI's shape. Returns the request ids."""
    ids = []
    for stream in (False, True):
        body = {"model": WRONG_KEY_MODEL, "messages": MESSAGES, "stream": stream}
        status, headers, data = gateway.request("POST", "/v1/chat/completions", body=body)
        assert status == 502, (stream, status, data)
        err = json.loads(data)["error"]
        assert {"message", "type", "param", "code"} <= set(err)
        assert mock_upstream.calls()["last_authorization_ok"] is False, "the mock did refuse the wrong key"
        ids.append(headers["x-request-id"])
    # And through the SDK: a 5xx the client sees as a server error.
    with pytest.raises(openai.InternalServerError) as exc:
        gateway.openai().chat.completions.create(model=WRONG_KEY_MODEL, messages=MESSAGES)
    assert exc.value.status_code == 502
    gateway.error_bodies.append(exc.value.response.content)
    ids.append(exc.value.response.headers["x-request-id"])
    return ids


def ordinary_traffic(gateway) -> list[str]:
    client = gateway.openai()
    ids = []
    raw = client.chat.completions.with_raw_response.create(model=CHAT_MODEL, messages=MESSAGES)
    ids.append(raw.headers["x-request-id"])
    with client.chat.completions.with_streaming_response.create(
        model=CHAT_MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    ) as resp:
        ids.append(resp.headers["x-request-id"])
        assert sse_text(resp.read()).startswith("Mock reply: Is my key safe")
    raw = client.embeddings.with_raw_response.create(model=EMBED_MODEL, input="secret keeping")
    ids.append(raw.headers["x-request-id"])
    return ids


def test_upstream_keys_never_leak(gateway, mock_upstream):
    ids = ordinary_traffic(gateway) + upstream_auth_failures(gateway, mock_upstream)
    # A console session too (sign-in writes sessions; later features write the audit log).
    console = ConsoleSession(gateway.url)
    assert console.sign_in("admin", gateway.admin_password)[0] in (302, 303)
    assert console.get("/")[0] == 200

    # Every request is in the ledger before we look at the database.
    wait_for("the ledger rows of this test", lambda: set(ids) <= gateway.database.ledger_request_ids())

    sec = gateway.secrets
    bodies = {f"error body #{i}": b for i, b in enumerate(gateway.error_bodies)}
    assert bodies, "the test produced error bodies to check"
    assert find_secrets(bodies, sec.all()) == []
    assert find_secrets({"gateway stderr": gateway.stderr()}, sec.all()) == []
    assert find_secrets(gateway.database.raw_bytes(), sec.all()) == []


def test_shutdown_flushes_ledger_and_keeps_secrets(fresh_gateway, mock_upstream):
    """SIGTERM: the gateway drains, flushes every ledger row, exits 0 — and what it leaves
    behind (log, database files after the final checkpoint) holds no secret."""
    gw = fresh_gateway()
    ids = ordinary_traffic(gw) + upstream_auth_failures(gw, mock_upstream)
    assert gw.stop() == 0, gw.stderr().decode(errors="replace")[-3000:]
    assert set(ids) <= gw.database.ledger_request_ids(), "ledger rows lost at shutdown"
    assert gw.database.ledger_count() == len(ids)
    assert find_secrets({"gateway stderr": gw.stderr()}, gw.secrets.all()) == []
    assert find_secrets(gw.database.raw_bytes(), gw.secrets.all()) == []
