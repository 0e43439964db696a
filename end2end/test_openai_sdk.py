"""The official `openai` Python SDK against the gateway, which proxies to the mock upstream."""

from __future__ import annotations

import json

import openai
import pytest

from conftest import CHAT_MODEL, COMPAT_MODEL, CONFIGURED_MODELS, EMBED_MODEL, LOCAL_MODEL
from support import mock_chat_usage, mock_embedding_tokens

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Tell me about the quick brown fox"},
]


def assert_openai_error_shape(body: bytes | str) -> dict:
    doc = json.loads(body)
    assert set(doc) == {"error"}, doc
    err = doc["error"]
    assert {"message", "type", "param", "code"} <= set(err), err
    assert isinstance(err["message"], str) and err["message"], err
    assert isinstance(err["type"], str) and err["type"], err
    return err


@pytest.mark.parametrize("model", [CHAT_MODEL, COMPAT_MODEL])
def test_chat_completion(gateway, mock_upstream, model):
    text, prompt, completion = mock_chat_usage(MESSAGES)
    raw = gateway.openai().chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
    resp = raw.parse()

    assert resp.object == "chat.completion"
    assert len(resp.choices) == 1
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == text == "Mock reply: Tell me about the quick brown fox"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (prompt, completion) == (16, 9)
    assert resp.usage.total_tokens == prompt + completion
    assert raw.headers.get("x-request-id")
    assert raw.headers.get("x-gateway-deployment")
    assert raw.headers.get("x-gateway-cost-usd") is not None

    # The mock saw the upstream model name and the right key (not the client's key).
    calls = mock_upstream.calls()
    assert calls["last_authorization_ok"] is True
    expected_upstream = {CHAT_MODEL: "gpt-4o-mini", COMPAT_MODEL: "llama-3.1-8b-instruct"}[model]
    assert calls["last_body"]["model"] == expected_upstream


def test_chat_cost_header_is_priced(gateway):
    """gpt-4o-mini is priced at $0.15 / $0.60 per million tokens in the config."""
    _, prompt, completion = mock_chat_usage(MESSAGES)
    raw = gateway.openai().chat.completions.with_raw_response.create(model=CHAT_MODEL, messages=MESSAGES)
    cost = float(raw.headers["x-gateway-cost-usd"])
    expected = (prompt * 0.15 + completion * 0.6) / 1_000_000
    assert cost == pytest.approx(expected, abs=1e-6)
    assert cost > 0


def test_chat_with_builtin_mock_provider(gateway):
    text, prompt, completion = mock_chat_usage(MESSAGES)
    resp = gateway.openai().chat.completions.create(model=LOCAL_MODEL, messages=MESSAGES)
    assert resp.choices[0].message.content == text
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (prompt, completion)


def test_max_tokens_is_passed_on(gateway):
    text, _, completion = mock_chat_usage(MESSAGES, max_tokens=3)
    resp = gateway.openai().chat.completions.create(model=CHAT_MODEL, messages=MESSAGES, max_tokens=3)
    assert resp.choices[0].message.content == text == "Mock reply: Tell"
    assert resp.usage.completion_tokens == completion == 3


def test_streaming_without_usage(gateway):
    text, _, completion = mock_chat_usage(MESSAGES)
    stream = gateway.openai().chat.completions.create(model=CHAT_MODEL, messages=MESSAGES, stream=True)
    chunks = list(stream)

    content_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    # One chunk per word: the stream really is a stream, not one blob.
    assert len(content_chunks) == completion
    assert "".join(c.choices[0].delta.content for c in content_chunks) == text
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    # Not asked for: no usage chunk, and no usage on any chunk.
    assert all(c.choices for c in chunks), "a usage-only chunk arrived without include_usage"
    assert all(c.usage is None for c in chunks)


def test_streaming_with_usage(gateway):
    text, prompt, completion = mock_chat_usage(MESSAGES)
    stream = gateway.openai().chat.completions.create(
        model=COMPAT_MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1, "exactly one chunk carries usage"
    final = chunks[-1]
    assert final is with_usage[0], "the usage chunk is the last one"
    assert final.choices == []
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (prompt, completion)
    assert final.usage.total_tokens == prompt + completion


def test_models_list(gateway):
    models = gateway.openai().models.list()
    ids = [m.id for m in models.data]
    for name in CONFIGURED_MODELS:
        assert name in ids
    assert len(ids) == len(set(ids)), f"duplicates in {ids}"
    assert all(m.object == "model" for m in models.data)


def test_model_retrieve(gateway):
    m = gateway.openai().models.retrieve(CHAT_MODEL)
    assert m.id == CHAT_MODEL
    with pytest.raises(openai.NotFoundError):
        gateway.openai().models.retrieve("no-such-model")


def test_bad_key_is_401(gateway):
    client = gateway.openai(api_key="sk-not-a-real-key-0000000000000000")
    with pytest.raises(openai.AuthenticationError) as exc:
        client.chat.completions.create(model=CHAT_MODEL, messages=MESSAGES)
    assert exc.value.status_code == 401
    gateway.error_bodies.append(exc.value.response.content)
    err = assert_openai_error_shape(exc.value.response.content)
    assert "sk-not-a-real-key" not in err["message"]

    # The same for every /v1 route, streaming included, and for a missing key.
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
    with pytest.raises(openai.AuthenticationError):
        list(client.chat.completions.create(model=CHAT_MODEL, messages=MESSAGES, stream=True))
    status, _, body = gateway.request("GET", "/v1/models", auth=False)
    assert status == 401
    assert_openai_error_shape(body)


def test_unknown_model_is_404(gateway, mock_upstream):
    before = mock_upstream.calls()["chat"]
    with pytest.raises(openai.NotFoundError) as exc:
        gateway.openai().chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert exc.value.status_code == 404
    gateway.error_bodies.append(exc.value.response.content)
    assert_openai_error_shape(exc.value.response.content)
    with pytest.raises(openai.NotFoundError):
        gateway.openai().embeddings.create(model="no-such-model", input="hello")
    assert mock_upstream.calls()["chat"] == before, "an unknown model must not reach an upstream"


def test_malformed_request_is_400_in_openai_shape(gateway):
    status, _, body = gateway.request("POST", "/v1/chat/completions", body=b"{not json", headers={"Content-Type": "application/json"})
    assert status == 400
    assert_openai_error_shape(body)
    with pytest.raises(openai.BadRequestError):
        gateway.openai().chat.completions.create(model=CHAT_MODEL, messages="not a list")  # type: ignore[arg-type]


@pytest.mark.parametrize("encoding_format", [None, "float"])
def test_embeddings(gateway, encoding_format):
    texts = ["the quick brown fox", "jumps"]
    kwargs = {} if encoding_format is None else {"encoding_format": encoding_format}
    raw = gateway.openai().embeddings.with_raw_response.create(model=EMBED_MODEL, input=texts, **kwargs)
    resp = raw.parse()
    assert [d.index for d in resp.data] == [0, 1]
    assert all(len(d.embedding) == 8 for d in resp.data)
    assert all(isinstance(x, float) and -1.0 <= x <= 1.0 for d in resp.data for x in d.embedding)
    assert resp.data[0].embedding != resp.data[1].embedding
    assert resp.usage.prompt_tokens == mock_embedding_tokens(texts) == 5
    assert raw.headers.get("x-gateway-deployment")

    # Deterministic: the same text gives the same vector.
    again = gateway.openai().embeddings.create(model=EMBED_MODEL, input="jumps", **kwargs)
    assert again.data[0].embedding == resp.data[1].embedding
