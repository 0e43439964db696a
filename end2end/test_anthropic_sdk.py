"""The official `anthropic` Python SDK against the gateway's `/v1/messages` (Anthropic's
dialect), served by an OpenAI-compatible deployment (translated both ways) and by an
`anthropic` deployment (the mock's Anthropic face)."""

from __future__ import annotations

import json

import anthropic
import pytest

from conftest import CLAUDE_MODEL, CLAUDE_TOOL_MODEL, COMPAT_MODEL

SYSTEM = "Be brief."  # 2 words
PROMPT = "Hello from the anthropic sdk"  # 5 words
REPLY = "Mock reply: Hello from the anthropic sdk"  # 7 tokens, one a word
MESSAGES = [{"role": "user", "content": PROMPT}]
TOOLS = [
    {
        "name": "lookup",
        "description": "Looks things up",
        "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}},
    }
]

# (deployment, upstream model the mock sees, prompt tokens of SYSTEM + MESSAGES).
# The OpenAI mock counts every message's words + 3 (the system prompt is a message there);
# the Anthropic mock counts the `system` field's words alone, + 3 per turn.
SERVED_BY = {
    "openai-compatible": (COMPAT_MODEL, "llama-3.1-8b-instruct", (2 + 3) + (5 + 3)),
    "anthropic": (CLAUDE_MODEL, "claude-mock-up", 2 + (5 + 3)),
}


@pytest.fixture(params=list(SERVED_BY), ids=lambda p: f"via-{p}")
def served_by(request):
    return SERVED_BY[request.param]


def test_message(gateway, mock_upstream, served_by):
    model, upstream, prompt_tokens = served_by
    before = mock_upstream.calls()["by_model"].get(upstream, 0)
    raw = gateway.anthropic().messages.with_raw_response.create(
        model=model, max_tokens=64, system=SYSTEM, messages=MESSAGES
    )
    msg = raw.parse()

    assert msg.type == "message"
    assert msg.role == "assistant"
    assert msg.model == model
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == REPLY
    assert msg.stop_reason == "end_turn"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (prompt_tokens, 7)
    assert raw.headers.get("x-request-id")
    assert raw.headers.get("x-gateway-deployment")

    calls = mock_upstream.calls()
    assert calls["by_model"].get(upstream, 0) == before + 1
    assert calls["last_authorization_ok"] is True
    assert calls["last_body"]["model"] == upstream
    assert calls["last_body"]["max_tokens"] == 64


def test_max_tokens_cuts_the_answer(gateway, served_by):
    model, _, _ = served_by
    msg = gateway.anthropic().messages.create(model=model, max_tokens=3, messages=MESSAGES)
    assert msg.content[0].text == "Mock reply: Hello"
    assert msg.usage.output_tokens == 3


def test_stream_helper(gateway, served_by):
    model, _, prompt_tokens = served_by
    with gateway.anthropic().messages.stream(model=model, max_tokens=64, system=SYSTEM, messages=MESSAGES) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()

    assert len(pieces) >= 7, f"streamed word by word, not as one blob: {pieces}"
    assert "".join(pieces) == REPLY
    assert final.content[0].text == REPLY
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 7
    assert final.usage.input_tokens == prompt_tokens


def test_create_stream_events(gateway, served_by):
    model, _, _ = served_by
    events = list(
        gateway.anthropic().messages.create(model=model, max_tokens=64, messages=MESSAGES, stream=True)
    )
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert "content_block_start" in kinds and "content_block_stop" in kinds
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta")
    assert text == REPLY
    delta = events[-2]
    assert delta.delta.stop_reason == "end_turn"
    assert delta.usage.output_tokens == 7


def test_tool_use(gateway, mock_upstream):
    client = gateway.anthropic()
    msg = client.messages.create(
        model=CLAUDE_TOOL_MODEL,
        max_tokens=64,
        tools=TOOLS,
        messages=[{"role": "user", "content": "find cats"}],
    )
    assert msg.stop_reason == "tool_use"
    tool = [b for b in msg.content if b.type == "tool_use"]
    assert len(tool) == 1
    assert tool[0].name == "lookup"
    assert tool[0].input == {"query": "cats"}
    assert tool[0].id
    # The tools reached the upstream as declared.
    assert mock_upstream.calls()["last_body"]["tools"][0]["name"] == "lookup"

    # Streamed: the SDK assembles the tool input from the input_json_delta pieces.
    with client.messages.stream(
        model=CLAUDE_TOOL_MODEL,
        max_tokens=64,
        tools=TOOLS,
        messages=[{"role": "user", "content": "find cats"}],
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    tool = [b for b in final.content if b.type == "tool_use"]
    assert [(t.name, t.input) for t in tool] == [("lookup", {"query": "cats"})]

    # And the tool's result goes back as a second turn.
    follow = client.messages.create(
        model=CLAUDE_TOOL_MODEL,
        max_tokens=64,
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "find cats"},
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in final.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": tool[0].id, "content": "three cats"}],
            },
        ],
    )
    assert follow.type == "message"
    sent = mock_upstream.calls()["last_body"]["messages"]
    assert [t["role"] for t in sent] == ["user", "assistant", "user"]
    assert any(b.get("type") == "tool_result" for b in sent[2]["content"])


def test_bad_key_is_authentication_error(gateway):
    client = gateway.anthropic(api_key="sk-not-a-real-key-0000000000000000")
    with pytest.raises(anthropic.AuthenticationError) as exc:
        client.messages.create(model=CLAUDE_MODEL, max_tokens=16, messages=MESSAGES)
    assert exc.value.status_code == 401
    body = exc.value.response.content
    gateway.error_bodies.append(body)
    doc = json.loads(body)
    assert doc["type"] == "error"
    assert doc["error"]["type"] == "authentication_error"
    assert "sk-not-a-real-key" not in doc["error"]["message"]

    with pytest.raises(anthropic.AuthenticationError):
        with client.messages.stream(model=COMPAT_MODEL, max_tokens=16, messages=MESSAGES) as stream:
            stream.get_final_message()


def test_unknown_model_is_not_found(gateway):
    with pytest.raises(anthropic.NotFoundError) as exc:
        gateway.anthropic().messages.create(model="no-such-model", max_tokens=16, messages=MESSAGES)
    gateway.error_bodies.append(exc.value.response.content)
    assert json.loads(exc.value.response.content)["error"]["type"] == "not_found_error"


@pytest.mark.parametrize("model_name", ["GEMINI_MODEL", "BEDROCK_MODEL", "AZURE_MODEL"])
def test_message_served_by_gemini_bedrock_and_azure(gateway, model_name):
    """An Anthropic-native client on a Gemini, Bedrock or Azure deployment: the request goes
    Anthropic → OpenAI → the provider's format and the answer all the way back, streamed
    and not."""
    import conftest

    model = getattr(conftest, model_name)
    client = gateway.anthropic()
    msg = client.messages.create(model=model, max_tokens=64, messages=MESSAGES)
    assert msg.content[0].text == REPLY
    assert msg.stop_reason == "end_turn"
    assert msg.usage.output_tokens == 7 and msg.usage.input_tokens > 0

    with client.messages.stream(model=model, max_tokens=64, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == REPLY
    assert final.usage.output_tokens == 7
