"""Metering end to end: proxied calls land in the ledger (written in batches off the request
path) and the console's Overview counts them. Runs on a gateway with a database of its own
so the counts are exact."""

from __future__ import annotations

from conftest import CHAT_MODEL, COMPAT_MODEL, CONFIGURED_MODELS, EMBED_MODEL, WRONG_KEY_MODEL
from support import ConsoleSession, mock_chat_usage, mock_embedding_tokens, stat_sub, stat_value, wait_for


def overview(console: ConsoleSession) -> str:
    status, location, html = console.get("/")
    assert status == 200, (status, location)
    return html


def overview_when(console: ConsoleSession, requests: int) -> str:
    """The Overview once it counts `requests` requests (ledger rows land in batches)."""

    def probe():
        html = overview(console)
        return html if stat_value(html, "stat-requests") == requests else None

    return wait_for(f"the Overview to count {requests} requests", probe, timeout=10)


def test_overview_counts_requests_and_tokens(fresh_gateway):
    gw = fresh_gateway()
    console = ConsoleSession(gw.url)
    status, location = console.sign_in("admin", gw.admin_password)
    assert status in (302, 303) and location == "/", (status, location)

    html = overview(console)
    assert stat_value(html, "stat-requests") == 0
    assert stat_value(html, "stat-tokens") == 0
    assert stat_value(html, "stat-models") == len(CONFIGURED_MODELS)

    client = gw.openai()
    expected_tokens = 0
    calls = 0
    for i in range(3):
        messages = [{"role": "user", "content": f"count me in number {i}"}]
        client.chat.completions.create(model=CHAT_MODEL, messages=messages)
        _, p, c = mock_chat_usage(messages)
        expected_tokens += p + c
        calls += 1
    # Streams count too, whether or not the client asked for usage.
    for model, opts in ((COMPAT_MODEL, None), (CHAT_MODEL, {"include_usage": True})):
        messages = [{"role": "user", "content": "stream me some words please"}]
        kwargs = {"stream_options": opts} if opts else {}
        text = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(model=model, messages=messages, stream=True, **kwargs)
            if c.choices
        )
        reply, p, c = mock_chat_usage(messages)
        assert text == reply
        expected_tokens += p + c
        calls += 1
    texts = ["one two three", "four"]
    client.embeddings.create(model=EMBED_MODEL, input=texts)
    expected_tokens += mock_embedding_tokens(texts)
    calls += 1

    html = overview_when(console, calls)
    assert stat_value(html, "stat-tokens") == expected_tokens
    assert stat_sub(html, "stat-requests").startswith("0 failed")

    # A failed upstream call is a request too, and shows as failed.
    status, _, _ = gw.request("POST", "/v1/chat/completions", body={"model": WRONG_KEY_MODEL, "messages": [{"role": "user", "content": "x"}]})
    assert status == 502
    html = overview_when(console, calls + 1)
    assert stat_sub(html, "stat-requests").startswith("1 failed")
    assert gw.database.ledger_count() == calls + 1
