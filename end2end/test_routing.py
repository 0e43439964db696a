"""Fail-over seen from the `openai` SDK: a dead deployment is routed around, a group that
answers 5xx falls back to another group, a deployment slower than its first-byte timeout
gives way to a quick one — and a stream is never retried once a byte reached the client."""

from __future__ import annotations

import time

import openai
import pytest

from conftest import (
    BROKEN_MODEL,
    HA_ALIVE,
    HA_MODEL,
    RESCUE_DEPLOYMENT,
    SLOW_MODEL,
    SLOW_QUICK,
    STALL_MODEL,
)
from support import mock_chat_usage

MESSAGES = [{"role": "user", "content": "are you still there"}]
TEXT = "Mock reply: are you still there"


def by_model(mock_upstream, upstream: str) -> int:
    return mock_upstream.calls()["by_model"].get(upstream, 0)


def call(client, model: str, stream: bool) -> tuple[dict, str]:
    """(response headers, answer text), streamed or not, through the SDK."""
    if stream:
        with client.chat.completions.with_streaming_response.create(
            model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        ) as resp:
            chunks = list(resp.parse())
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            assert chunks[-1].usage is not None
            return dict(resp.headers), text
    raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
    return dict(raw.headers), raw.parse().choices[0].message.content


def test_dead_deployment_is_routed_around(gateway, mock_upstream):
    """The heavy-weighted deployment's port refuses connections: every request still
    succeeds on the healthy one (retried in the same request), and once the dead one has
    failed often enough it rests and is no longer tried."""
    client = gateway.openai()
    before = by_model(mock_upstream, "ha-up")
    n = 10
    attempts = []
    for i in range(n):
        headers, text = call(client, HA_MODEL, stream=i % 2 == 1)
        assert text == TEXT, f"request {i}"
        assert headers["x-gateway-deployment"] == HA_ALIVE, f"request {i}: {headers}"
        attempts.append(int(headers["x-gateway-attempts"]))
    assert any(a >= 2 for a in attempts), f"the dead deployment (weight 10000) was never tried: {attempts}"
    assert attempts[-3:] == [1, 1, 1], f"the dead deployment should be cooling down: {attempts}"
    # Only the healthy deployment reached the mock, once per request.
    assert by_model(mock_upstream, "ha-up") == before + n


def test_group_answering_5xx_falls_back(gateway, mock_upstream):
    client = gateway.openai()
    before = {m: by_model(mock_upstream, m) for m in ("fail-500", "fail-503", "rescue-up")}
    for stream in (False, True, False):
        headers, text = call(client, BROKEN_MODEL, stream=stream)
        assert text == TEXT
        assert headers["x-gateway-deployment"] == RESCUE_DEPLOYMENT, headers
        assert int(headers["x-gateway-attempts"]) >= 2, headers
    after = {m: by_model(mock_upstream, m) for m in before}
    assert after["rescue-up"] == before["rescue-up"] + 3, "the fallback group answered every request"
    assert after["fail-500"] > before["fail-500"] and after["fail-503"] > before["fail-503"], (
        "the failing group was tried first",
        before,
        after,
    )


def test_slow_first_byte_fails_over(gateway):
    client = gateway.openai()
    for stream in (False, True, False):
        started = time.monotonic()
        headers, text = call(client, SLOW_MODEL, stream=stream)
        elapsed = time.monotonic() - started
        assert text == TEXT
        assert headers["x-gateway-deployment"] == SLOW_QUICK, headers
        # The slow one (5 s) was given up after its 300 ms first-byte timeout.
        assert elapsed < 3.0, f"took {elapsed:.2f}s"


def test_stalled_stream_is_not_retried(gateway, mock_upstream):
    """Two chunks reach the client, then the upstream goes silent: the idle timeout ends
    the stream with an error the SDK raises, and the request is not retried (retries = 2)."""
    before = by_model(mock_upstream, "stall")
    client = gateway.openai()
    raw = client.chat.completions.with_raw_response.create(
        model=STALL_MODEL, messages=[{"role": "user", "content": "a b c"}], stream=True
    )
    assert raw.http_response.status_code == 200
    assert raw.headers["x-gateway-attempts"] == "1", raw.headers
    received = []
    started = time.monotonic()
    with pytest.raises(openai.APIError) as exc:
        for chunk in raw.parse():
            received.append(chunk)
    elapsed = time.monotonic() - started
    assert received, "the first chunks reached the client before the stall"
    text = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    # The mock sends the role chunk and the first word, then nothing.
    assert text == "Mock", received
    assert mock_chat_usage([{"role": "user", "content": "a b c"}])[0].startswith(text)
    assert elapsed < 10.0, f"the idle timeout (300 ms) ended the stream late: {elapsed:.2f}s"
    assert not isinstance(exc.value, openai.APIStatusError)
    body = exc.value.body if isinstance(exc.value.body, dict) else {}
    assert "timeout" in f"{body.get('code')} {body.get('type')} {exc.value.message}".lower(), exc.value.body

    time.sleep(0.5)  # a retry, were there one, would have reached the mock by now
    assert by_model(mock_upstream, "stall") == before + 1, "bytes reached the client: never retried"
