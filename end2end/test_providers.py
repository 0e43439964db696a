"""The `openai` SDK against deployments of other providers — Azure, Anthropic, Gemini, Bedrock —
on the mock upstream's faces for each: the gateway translates both ways, streams included."""

from __future__ import annotations

import pytest

from conftest import AZURE_MODEL, BEDROCK_MODEL, CLAUDE_MODEL, GEMINI_MODEL
from support import mock_chat_usage

MESSAGES = [{"role": "user", "content": "Tell me about the quick brown fox"}]

# Deployment → the upstream model the mock records the call under.
PROVIDERS = {
    "azure": (AZURE_MODEL, "e2e-azure-deployment"),
    "anthropic": (CLAUDE_MODEL, "claude-mock-up"),
    "gemini": (GEMINI_MODEL, "gemini-mock-flash"),
    "bedrock": (BEDROCK_MODEL, "anthropic.claude-mock-v1:0"),
}


@pytest.fixture(params=list(PROVIDERS))
def provider(request):
    return PROVIDERS[request.param]


def test_chat(gateway, mock_upstream, provider):
    model, upstream = provider
    text, prompt, completion = mock_chat_usage(MESSAGES)
    before = mock_upstream.calls()["by_model"].get(upstream, 0)
    raw = gateway.openai().chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
    resp = raw.parse()

    assert resp.object == "chat.completion"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == text == "Mock reply: Tell me about the quick brown fox"
    assert resp.choices[0].finish_reason == "stop"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (prompt, completion) == (10, 9)
    assert resp.usage.total_tokens == prompt + completion
    assert raw.headers.get("x-gateway-deployment")
    calls = mock_upstream.calls()
    assert calls["by_model"].get(upstream, 0) == before + 1, calls["by_model"]
    assert calls["last_authorization_ok"] is True


def test_stream_without_usage(gateway, provider):
    model, _ = provider
    text, _, _ = mock_chat_usage(MESSAGES)
    chunks = list(gateway.openai().chat.completions.create(model=model, messages=MESSAGES, stream=True))

    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) > 1, "streamed in pieces"
    assert "".join(content) == text
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert all(c.choices for c in chunks), "a usage-only chunk arrived without include_usage"
    assert all(c.usage is None for c in chunks)


def test_stream_with_usage(gateway, provider):
    model, _ = provider
    text, prompt, completion = mock_chat_usage(MESSAGES)
    chunks = list(
        gateway.openai().chat.completions.create(
            model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1, "exactly one chunk carries usage"
    final = chunks[-1]
    assert final is with_usage[0], "the usage chunk is the last one"
    assert final.choices == []
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (prompt, completion)
    assert final.usage.total_tokens == prompt + completion


def test_system_prompt_and_max_tokens(gateway, provider):
    model, _ = provider
    messages = [{"role": "system", "content": "You are terse."}] + MESSAGES
    resp = gateway.openai().chat.completions.create(model=model, messages=messages, max_tokens=3)
    assert resp.choices[0].message.content == "Mock reply: Tell"
    assert resp.usage.completion_tokens == 3
