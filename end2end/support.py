"""Helpers of the end-to-end suite: plain HTTP, the two databases, the mock's token rules,
reading the console's Overview, and looking for secrets in bytes."""

from __future__ import annotations

import http.cookiejar
import json
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Iterable, TypeVar

PG_HOST = "127.0.0.1"
PG_PORT = "5432"
PG_USER = "postgres"

T = TypeVar("T")


# --------------------------------------------------------------------------- HTTP


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # noqa: D401 - urllib's hook
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def http_request(method: str, url: str, body=None, headers=None, opener=None, timeout: float = 30.0):
    """(status, headers, body bytes) without following redirects; `body` may be a dict
    (sent as JSON), bytes or None."""
    hdrs = dict(headers or {})
    data = None
    if isinstance(body, (dict, list)):
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    elif isinstance(body, (bytes, str)):
        data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    try:
        with (opener or _OPENER).open(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.05) -> T:
    """Polls `probe` until it returns something truthy (an event we cannot subscribe to,
    such as a batched ledger write becoming visible); fails with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


# --------------------------------------------------------------------------- databases


def _psql(db: str, sql: str) -> str:
    out = subprocess.run(
        ["psql", "-h", PG_HOST, "-p", PG_PORT, "-U", PG_USER, "-d", db, "-v", "ON_ERROR_STOP=1", "-XAtq", "-c", sql],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if out.returncode != 0:
        raise RuntimeError(f"psql failed ({out.returncode}): {out.stderr.strip()}")
    return out.stdout


class Database:
    url: str

    def ledger_count(self) -> int:
        raise NotImplementedError

    def ledger_request_ids(self) -> set[str]:
        raise NotImplementedError

    def raw_bytes(self) -> dict[str, bytes]:
        """Everything the database holds, as bytes, by where it came from."""
        raise NotImplementedError

    def drop(self) -> None:
        pass


class SqliteDatabase(Database):
    def __init__(self, path: Path):
        self.path = path
        self.url = f"sqlite://{path}"

    def _query(self, sql: str) -> list[tuple]:
        import sqlite3

        # Read-only, beside the gateway's own connections (WAL lets readers in).
        con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()

    def ledger_count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM ledger")[0][0])

    def ledger_request_ids(self) -> set[str]:
        return {r[0] for r in self._query("SELECT request_id FROM ledger")}

    def raw_bytes(self) -> dict[str, bytes]:
        # The main file and whatever WAL / shared-memory files sit beside it.
        return {p.name: p.read_bytes() for p in sorted(self.path.parent.glob(self.path.name + "*"))}


class PostgresDatabase(Database):
    def __init__(self, name: str):
        self.name = name
        self.url = f"postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"

    @staticmethod
    def available() -> bool:
        try:
            return _psql("postgres", "SELECT 1").strip() == "1"
        except (RuntimeError, OSError, subprocess.TimeoutExpired):
            return False

    @classmethod
    def create(cls, name: str) -> "PostgresDatabase":
        assert re.fullmatch(r"[a-z0-9_]+", name)
        _psql("postgres", f'CREATE DATABASE "{name}"')
        return cls(name)

    def drop(self) -> None:
        _psql("postgres", f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def ledger_count(self) -> int:
        return int(_psql(self.name, "SELECT COUNT(*) FROM ledger").strip())

    def ledger_request_ids(self) -> set[str]:
        return {line for line in _psql(self.name, "SELECT request_id FROM ledger").splitlines() if line}

    def dump(self) -> bytes:
        out = subprocess.run(
            ["pg_dump", "-h", PG_HOST, "-p", PG_PORT, "-U", PG_USER, "--no-owner", self.name],
            capture_output=True,
            timeout=120,
        )
        if out.returncode != 0:
            raise RuntimeError(f"pg_dump failed: {out.stderr.decode(errors='replace')}")
        return out.stdout

    def table_text(self, table: str) -> bytes:
        # Each row as text: every column, whatever its type.
        return _psql(self.name, f"SELECT t::text FROM {table} t").encode()

    def raw_bytes(self) -> dict[str, bytes]:
        return {
            "pg_dump": self.dump(),
            "SELECT ledger": self.table_text("ledger"),
            "SELECT audit_log": self.table_text("audit_log"),
        }


# --------------------------------------------------------------------------- the mock's rules


def words(text: str) -> int:
    return len(text.split())


def mock_chat_usage(messages: list[dict], max_tokens: int | None = None) -> tuple[str, int, int]:
    """(reply text, prompt tokens, completion tokens) the mock upstream gives for `messages`:
    "Mock reply:" and the last user message's first 48 words, one token per word; the
    prompt costs its words plus 3 per message."""
    prompt = sum(words(m["content"]) + 3 for m in messages)
    last_user = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    reply = ["Mock", "reply:"] + last_user.split()[:48]
    if max_tokens is not None:
        reply = reply[: max(1, max_tokens)]
    return " ".join(reply), prompt, len(reply)


def sse_text(raw: bytes) -> str:
    """The assistant text of a raw chat completion SSE stream."""
    text = []
    for line in raw.decode().splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            for choice in json.loads(line[6:]).get("choices", []):
                text.append(choice.get("delta", {}).get("content") or "")
    return "".join(text)


def mock_embedding_tokens(texts: Iterable[str]) -> int:
    return sum(max(1, words(t)) for t in texts)


# --------------------------------------------------------------------------- the console over HTTP


class ConsoleSession:
    """A signed-in console session without a browser (cookies kept, redirects not followed)."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect)

    def sign_in(self, username: str, password: str) -> tuple[int, str]:
        body = urllib.parse.urlencode({"username": username, "password": password})
        status, headers, _ = http_request(
            "POST",
            f"{self.base_url}/api/sign_in",
            body=body,
            # As a browser's plain form post: the server answers with a redirect.
            headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "text/html"},
            opener=self.opener,
        )
        return status, headers.get("Location", "")

    def get(self, path: str) -> tuple[int, str, str]:
        status, headers, body = http_request(
            "GET", f"{self.base_url}{path}", headers={"Accept": "text/html"}, opener=self.opener
        )
        return status, headers.get("Location", ""), body.decode(errors="replace")


_TAGS = re.compile(r"<!--.*?-->|<[^>]+>", re.S)


def stat_value(html: str, testid: str) -> int:
    """The number in `[data-testid=testid] .value` of a server-rendered page."""
    m = re.search(rf'data-testid="{re.escape(testid)}".*?class="value"[^>]*>(.*?)</div>', html, re.S)
    assert m, f"no {testid} stat in the page"
    text = _TAGS.sub("", m.group(1)).strip()
    assert re.fullmatch(r"\d+", text), f"{testid} value is not a number: {text!r}"
    return int(text)


def stat_sub(html: str, testid: str) -> str:
    """The text of `[data-testid=testid] .sub`."""
    m = re.search(rf'data-testid="{re.escape(testid)}".*?class="sub"[^>]*>(.*?)</div>', html, re.S)
    assert m, f"no {testid} sub-line in the page"
    return " ".join(_TAGS.sub("", m.group(1)).split())


# --------------------------------------------------------------------------- secrets


def find_secrets(haystacks: dict[str, bytes], secrets: dict[str, str]) -> list[str]:
    """Where any secret appears, as "secret name in source" lines (empty when clean).
    Looks for the plain value, and for its random core alone (so a partly masked or
    re-encoded copy such as `Bearer <key>` or JSON-escaped text is still caught)."""
    found = []
    for source, data in haystacks.items():
        for name, value in secrets.items():
            needles = {value.encode(), value.split("-")[-1].encode()}
            if any(n in data for n in needles):
                found.append(f"{name} in {source}")
    return found
