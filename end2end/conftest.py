"""Fixtures of the end-to-end suite: the real `mock-upstream` and `gateway` binaries as
processes, one gateway per database backend (SQLite file, PostgreSQL database), and
Chromium driven by Playwright.

Every test that takes `gateway` (or `fresh_gateway`) runs once per backend. Backends can be
narrowed with `E2E_BACKENDS=sqlite` (comma-separated); by default both run, and PostgreSQL
must be reachable at 127.0.0.1:5432 as user `postgres` (trust auth), as on the development
and CI machines.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pytest

from idp import Idp, start_idp
from support import Database, PostgresDatabase, SqliteDatabase, http_request

REPO = Path(__file__).resolve().parent.parent
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR", "/var/cache/ai-gateway/target"))
GATEWAY_BIN = Path(os.environ.get("GATEWAY_BIN", TARGET_DIR / "release" / "gateway"))
MOCK_BIN = Path(os.environ.get("MOCK_BIN", TARGET_DIR / "release" / "mock-upstream"))
SITE_ROOT = Path(os.environ.get("GATEWAY_SITE_ROOT", REPO / "target" / "site"))
CHROMIUM = os.environ.get("E2E_CHROMIUM", "/usr/bin/chromium")
BACKENDS = [b.strip() for b in os.environ.get("E2E_BACKENDS", "sqlite,postgres").split(",") if b.strip()]
# Debug level on purpose: the secret checks read every line the gateway writes.
GATEWAY_LOG = os.environ.get("E2E_GATEWAY_LOG", "debug")

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 40.0

# Models the gateway under test serves (public name → what it proves).
CHAT_MODEL = "gpt-4o-mini"  # provider `openai`, priced
COMPAT_MODEL = "e2e-compatible"  # provider `openai-compatible`, another upstream model name
EMBED_MODEL = "text-embedding-3-small"  # provider `openai`, priced
WRONG_KEY_MODEL = "e2e-wrong-upstream-key"  # the mock refuses its key: a 502 for the client
LOCAL_MODEL = "e2e-local"  # the built-in `mock` provider
# Other providers, on the mock's Anthropic, Gemini and Bedrock faces.
CLAUDE_MODEL = "e2e-claude"  # provider `anthropic`
CLAUDE_TOOL_MODEL = "e2e-claude-tools"  # provider `anthropic`, upstream `tool`: a tool_use answer
GEMINI_MODEL = "e2e-gemini"  # provider `gemini`
BEDROCK_MODEL = "e2e-bedrock"  # provider `bedrock` (SigV4 checked by the mock)
AZURE_MODEL = "e2e-azure"  # provider `azure` (deployment URL, api-version, api-key)
# Routing: groups that fail over, fall back or time out.
HA_MODEL = "e2e-ha"  # a dead port (heavy weight) beside a healthy deployment
HA_DEAD, HA_ALIVE = "e2e-ha-dead", "e2e-ha-alive"
BROKEN_MODEL = "e2e-broken"  # both deployments answer 5xx; falls back to RESCUE_MODEL
RESCUE_MODEL = "e2e-rescue"
RESCUE_DEPLOYMENT = "e2e-rescue-1"
SLOW_MODEL = "e2e-slow"  # `slow-5000` with a 300 ms first-byte timeout (heavy) beside a quick one
SLOW_DEAD, SLOW_QUICK = "e2e-slow-slow", "e2e-slow-quick"
STALL_MODEL = "e2e-stall"  # streams two chunks then stalls; idle timeout 300 ms
CONFIGURED_MODELS = [
    CHAT_MODEL,
    COMPAT_MODEL,
    EMBED_MODEL,
    WRONG_KEY_MODEL,
    LOCAL_MODEL,
    CLAUDE_MODEL,
    CLAUDE_TOOL_MODEL,
    GEMINI_MODEL,
    BEDROCK_MODEL,
    AZURE_MODEL,
    HA_MODEL,
    BROKEN_MODEL,
    RESCUE_MODEL,
    SLOW_MODEL,
    STALL_MODEL,
]
# The secret access key the mock checks every SigV4 signature with (`MOCK_AWS_SECRET` in
# server/src/testkit/mock_bedrock.rs); the access key id is the mock's API key.
MOCK_AWS_SECRET = "mock/SECRET+access+key+for+tests+only"

CONFIG_TEMPLATE = """
[server]
master_key = "${{GATEWAY_MASTER_KEY}}"

[router]
retries = 2
backoff_ms = 10
max_backoff_ms = 100

[[deployments]]
model = "{chat}"
provider = "openai"
upstream_model = "gpt-4o-mini"
base_url = "{mock}"
api_key = "${{E2E_UPSTREAM_KEY}}"

[[deployments]]
model = "{compat}"
provider = "openai-compatible"
upstream_model = "llama-3.1-8b-instruct"
base_url = "{mock}"
api_key = "${{E2E_UPSTREAM_KEY}}"

[[deployments]]
model = "{embed}"
provider = "openai"
base_url = "{mock}"
api_key = "${{E2E_UPSTREAM_KEY}}"

[[deployments]]
model = "{wrong}"
provider = "openai-compatible"
upstream_model = "gpt-4o-mini"
base_url = "{mock}"
api_key = "${{E2E_WRONG_UPSTREAM_KEY}}"

[[deployments]]
model = "{local}"
provider = "mock"

[[deployments]]
model = "{claude}"
provider = "anthropic"
upstream_model = "claude-mock-up"
base_url = "{root}"
api_key = "${{E2E_UPSTREAM_KEY}}"

[[deployments]]
model = "{claude_tools}"
provider = "anthropic"
upstream_model = "tool"
base_url = "{root}"
api_key = "${{E2E_UPSTREAM_KEY}}"

[[deployments]]
model = "{azure}"
provider = "azure"
upstream_model = "e2e-azure-deployment"
base_url = "{root}"
api_key = "${{E2E_UPSTREAM_KEY}}"

[[deployments]]
model = "{gemini}"
provider = "gemini"
upstream_model = "gemini-mock-flash"
base_url = "{root}"
api_key = "${{E2E_UPSTREAM_KEY}}"

[[deployments]]
model = "{bedrock}"
provider = "bedrock"
upstream_model = "anthropic.claude-mock-v1:0"
base_url = "{root}"
region = "us-east-1"
aws_access_key_id = "${{E2E_UPSTREAM_KEY}}"
aws_secret_access_key = "{aws_secret}"

[[deployments]]
id = "{ha_dead}"
model = "{ha}"
provider = "openai-compatible"
upstream_model = "ha-up"
base_url = "http://127.0.0.1:{dead_port}/v1"
api_key = "${{E2E_UPSTREAM_KEY}}"
weight = 10000

[[deployments]]
id = "{ha_alive}"
model = "{ha}"
provider = "openai-compatible"
upstream_model = "ha-up"
base_url = "{mock}"
api_key = "${{E2E_UPSTREAM_KEY}}"
weight = 1

[[deployments]]
id = "e2e-broken-500"
model = "{broken}"
provider = "openai-compatible"
upstream_model = "fail-500"
base_url = "{mock}"
api_key = "${{E2E_UPSTREAM_KEY}}"

[[deployments]]
id = "e2e-broken-503"
model = "{broken}"
provider = "openai-compatible"
upstream_model = "fail-503"
base_url = "{mock}"
api_key = "${{E2E_UPSTREAM_KEY}}"

[[deployments]]
id = "{rescue_dep}"
model = "{rescue}"
provider = "openai-compatible"
upstream_model = "rescue-up"
base_url = "{mock}"
api_key = "${{E2E_UPSTREAM_KEY}}"

[[fallbacks]]
model = "{broken}"
to = ["{rescue}"]
on = ["error"]

[[deployments]]
id = "{slow_dead}"
model = "{slow}"
provider = "openai-compatible"
upstream_model = "slow-5000"
base_url = "{mock}"
api_key = "${{E2E_UPSTREAM_KEY}}"
first_byte_timeout_ms = 300
weight = 10000

[[deployments]]
id = "{slow_quick}"
model = "{slow}"
provider = "openai-compatible"
upstream_model = "quick-up"
base_url = "{mock}"
api_key = "${{E2E_UPSTREAM_KEY}}"
weight = 1

[[deployments]]
model = "{stall}"
provider = "openai-compatible"
upstream_model = "stall"
base_url = "{mock}"
api_key = "${{E2E_UPSTREAM_KEY}}"
idle_timeout_ms = 300

[[prices]]
model = "{chat}"
input_per_mtok = 0.15
output_per_mtok = 0.6

[[prices]]
model = "{embed}"
input_per_mtok = 0.02
output_per_mtok = 0.0
"""


@dataclass(frozen=True)
class Secrets:
    """Values that must never leave the gateway: each carries a random, greppable core."""

    upstream_key: str
    wrong_upstream_key: str
    master_key: str
    admin_password: str

    @staticmethod
    def generate() -> "Secrets":
        return Secrets(
            upstream_key=f"sk-e2e-upstream-{secrets.token_hex(16)}",
            wrong_upstream_key=f"sk-e2e-WRONG-{secrets.token_hex(16)}",
            master_key=f"sk-e2e-master-{secrets.token_hex(16)}",
            admin_password=f"e2e-admin-pw-{secrets.token_hex(8)}",
        )

    def upstream(self) -> dict[str, str]:
        return {"upstream key": self.upstream_key, "wrong upstream key": self.wrong_upstream_key}

    def all(self) -> dict[str, str]:
        return {**self.upstream(), "master key": self.master_key, "admin password": self.admin_password}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> int:
    """SIGTERM, then wait; SIGKILL only if it does not stop in time. Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


_DEAD_SOCKET: socket.socket | None = None


def dead_port() -> int:
    """A port where nothing listens, for the whole run: bound (so nothing else takes it)
    but never listening, so every connection is refused at once."""
    global _DEAD_SOCKET
    if _DEAD_SOCKET is None:
        _DEAD_SOCKET = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        _DEAD_SOCKET.bind(("127.0.0.1", 0))
    return _DEAD_SOCKET.getsockname()[1]


# --------------------------------------------------------------------------- mock upstream


@dataclass
class MockUpstream:
    proc: subprocess.Popen
    url: str  # http://127.0.0.1:PORT

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def calls(self) -> dict:
        status, _, body = http_request("GET", f"{self.url}/__mock/calls")
        assert status == 200, body
        return json.loads(body)

    def reset(self) -> None:
        status, _, body = http_request("POST", f"{self.url}/__mock/reset")
        assert status in (200, 204), body


@pytest.fixture(scope="session")
def e2e_secrets() -> Secrets:
    return Secrets.generate()


@pytest.fixture(scope="session")
def mock_upstream(e2e_secrets: Secrets, tmp_path_factory) -> Iterator[MockUpstream]:
    assert MOCK_BIN.is_file(), f"mock-upstream binary not found at {MOCK_BIN} (set MOCK_BIN)"
    log = tmp_path_factory.mktemp("mock") / "mock-upstream.stderr"
    with open(log, "wb") as err:
        proc = subprocess.Popen(
            [str(MOCK_BIN), "--listen", "127.0.0.1:0", "--api-key", e2e_secrets.upstream_key],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()  # blocks until the first line or exit
        assert line.startswith("listening on http://"), f"unexpected mock-upstream output: {line!r}"
        mock = MockUpstream(proc=proc, url=line.removeprefix("listening on "))
        yield mock
    finally:
        stop_process(proc, timeout=10)


# --------------------------------------------------------------------------- gateway


@dataclass
class Gateway:
    backend: str
    url: str
    proc: subprocess.Popen
    secrets: Secrets
    database: Database
    workdir: Path
    stderr_path: Path
    # Every error body the tests received from this gateway (checked for secrets).
    error_bodies: list[bytes] = field(default_factory=list)
    # The OpenID Connect provider its `[sso]` section points at (`sso_gateway` only).
    idp: Idp | None = None

    @property
    def master_key(self) -> str:
        return self.secrets.master_key

    @property
    def admin_password(self) -> str:
        return self.secrets.admin_password

    def openai(self, api_key: str | None = None, **kw):
        import openai

        return openai.OpenAI(
            base_url=f"{self.url}/v1",
            api_key=api_key if api_key is not None else self.master_key,
            max_retries=0,
            timeout=30.0,
            **kw,
        )

    def request(self, method: str, path: str, body=None, headers=None, auth: bool = True):
        """(status, headers, body bytes); redirects are not followed."""
        hdrs = dict(headers or {})
        if auth:
            hdrs.setdefault("Authorization", f"Bearer {self.master_key}")
        status, resp_headers, data = http_request(method, f"{self.url}{path}", body=body, headers=hdrs)
        if status >= 400:
            self.error_bodies.append(data)
        return status, resp_headers, data

    def anthropic(self, api_key: str | None = None, **kw):
        """The official `anthropic` SDK pointed at the gateway's `/v1/messages`."""
        import anthropic

        return anthropic.Anthropic(
            base_url=self.url,
            api_key=api_key if api_key is not None else self.master_key,
            max_retries=0,
            timeout=30.0,
            **kw,
        )

    def stderr(self) -> bytes:
        return self.stderr_path.read_bytes()

    def stop(self) -> int:
        return stop_process(self.proc)


def _create_database(backend: str, workdir: Path) -> Database:
    if backend == "sqlite":
        return SqliteDatabase(workdir / "gateway.db")
    if backend == "postgres":
        return PostgresDatabase.create(f"e2e_{secrets.token_hex(6)}")
    raise ValueError(f"unknown backend {backend!r}")


def start_gateway(
    backend: str,
    mock: MockUpstream,
    sec: Secrets,
    workdir: Path,
    extra_toml: str = "",
    port: int | None = None,
) -> Gateway:
    """`extra_toml` is appended to the shared config (e.g. an `[sso]` section); `port` fixes
    the listening port in advance (when something must know the URL before start-up)."""
    assert GATEWAY_BIN.is_file(), f"gateway binary not found at {GATEWAY_BIN} (set GATEWAY_BIN)"
    assert (SITE_ROOT / "pkg").is_dir(), f"site not built: {SITE_ROOT}/pkg missing (set GATEWAY_SITE_ROOT)"
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "gateway.toml"
    config.write_text(
        CONFIG_TEMPLATE.format(
            mock=mock.base_url,
            chat=CHAT_MODEL,
            compat=COMPAT_MODEL,
            embed=EMBED_MODEL,
            wrong=WRONG_KEY_MODEL,
            local=LOCAL_MODEL,
            root=mock.url,
            claude=CLAUDE_MODEL,
            claude_tools=CLAUDE_TOOL_MODEL,
            gemini=GEMINI_MODEL,
            bedrock=BEDROCK_MODEL,
            azure=AZURE_MODEL,
            aws_secret=MOCK_AWS_SECRET,
            ha=HA_MODEL,
            ha_dead=HA_DEAD,
            ha_alive=HA_ALIVE,
            dead_port=dead_port(),
            broken=BROKEN_MODEL,
            rescue=RESCUE_MODEL,
            rescue_dep=RESCUE_DEPLOYMENT,
            slow=SLOW_MODEL,
            slow_dead=SLOW_DEAD,
            slow_quick=SLOW_QUICK,
            stall=STALL_MODEL,
        )
        + extra_toml
    )
    database = _create_database(backend, workdir)
    port = port or free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GATEWAY_", "DATABASE_URL", "E2E_UPSTREAM", "E2E_WRONG"))
    }
    env.update(
        DATABASE_URL=database.url,
        GATEWAY_MASTER_KEY=sec.master_key,
        GATEWAY_ADMIN_PASSWORD=sec.admin_password,
        GATEWAY_SITE_ROOT=str(SITE_ROOT),
        GATEWAY_LOG=GATEWAY_LOG,
        E2E_UPSTREAM_KEY=sec.upstream_key,
        E2E_WRONG_UPSTREAM_KEY=sec.wrong_upstream_key,
    )
    stderr_path = workdir / "gateway.stderr"
    with open(stderr_path, "wb") as err, open(workdir / "gateway.stdout", "wb") as out:
        proc = subprocess.Popen(
            [str(GATEWAY_BIN), "--config", str(config), "--listen", f"127.0.0.1:{port}"],
            stdout=out,
            stderr=err,
            cwd=workdir,
            env=env,
        )
    gw = Gateway(
        backend=backend,
        url=f"http://127.0.0.1:{port}",
        proc=proc,
        secrets=sec,
        database=database,
        workdir=workdir,
        stderr_path=stderr_path,
    )
    try:
        _wait_ready(gw)
    except BaseException:
        gw.stop()
        database.drop()
        raise
    return gw


def _wait_ready(gw: Gateway) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        if gw.proc.poll() is not None:
            pytest.fail(
                f"gateway ({gw.backend}) exited with {gw.proc.returncode} during start-up:\n"
                + gw.stderr().decode(errors="replace")[-4000:]
            )
        try:
            with urllib.request.urlopen(f"{gw.url}/health/ready", timeout=2) as r:
                if r.status == 200:
                    return
                last = f"status {r.status}"
        except urllib.error.HTTPError as e:
            last = f"status {e.code}"
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            last = str(e)
        time.sleep(0.05)
    pytest.fail(
        f"gateway ({gw.backend}) not ready within {START_TIMEOUT_S}s (last: {last}):\n"
        + gw.stderr().decode(errors="replace")[-4000:]
    )


def finish_gateway(gw: Gateway) -> None:
    try:
        gw.stop()
    finally:
        gw.database.drop()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request) -> str:
    if request.param == "postgres" and not PostgresDatabase.available():
        pytest.fail("PostgreSQL is not reachable at 127.0.0.1:5432 as user postgres (set E2E_BACKENDS=sqlite to skip it)")
    return request.param


@pytest.fixture(scope="session")
def gateway(backend: str, mock_upstream: MockUpstream, e2e_secrets: Secrets, tmp_path_factory) -> Iterator[Gateway]:
    """The gateway shared by the tests of one backend."""
    gw = start_gateway(backend, mock_upstream, e2e_secrets, tmp_path_factory.mktemp(f"gateway-{backend}"))
    try:
        yield gw
    finally:
        finish_gateway(gw)


@pytest.fixture
def fresh_gateway(backend: str, mock_upstream: MockUpstream, e2e_secrets: Secrets, tmp_path) -> Iterator[Callable[[], Gateway]]:
    """Starts gateways with a database of their own (for exact counts); stops them after the test."""
    started: list[Gateway] = []

    def start() -> Gateway:
        gw = start_gateway(backend, mock_upstream, e2e_secrets, tmp_path / f"gateway-{len(started)}")
        started.append(gw)
        return gw

    try:
        yield start
    finally:
        for gw in started:
            finish_gateway(gw)


# --------------------------------------------------------------------------- browser

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser():
    assert shutil.which(CHROMIUM) or Path(CHROMIUM).is_file(), f"Chromium not found at {CHROMIUM}"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


# --------------------------------------------------------------------------- single sign-on

SSO_CLIENT_ID = "gateway-e2e"
SSO_LABEL = "Sign in with Example SSO"
# Appended to CONFIG_TEMPLATE for `sso_gateway`; the groups are those of PEOPLE in
# oidc/idp.mjs (alice: team-alpha, bob: team-alpha + leads, carol: team-beta, dave: team-beta +
# leads, root: gateway-admins, mallory: no groups and a domain that is not allowed).
SSO_TOML = """
[sso]
issuer = "{issuer}"
client_id = "{client_id}"
client_secret = "{client_secret}"
redirect_url = "{redirect_url}"
scopes = ["email", "profile", "groups"]
groups_claim = "groups"
allowed_domains = ["example.com"]
label = "{label}"

[[sso.roles]]
group = "gateway-admins"
role = "admin"

[[sso.teams]]
group = "team-alpha"
team = "Alpha"
role = "member"

[[sso.teams]]
group = "team-alpha-leads"
team = "Alpha"
role = "lead"

[[sso.teams]]
group = "team-beta"
team = "Beta"
role = "member"

[[sso.teams]]
group = "team-beta-leads"
team = "Beta"
role = "lead"
"""


@pytest.fixture(scope="session")
def sso_gateway(backend: str, mock_upstream: MockUpstream, e2e_secrets: Secrets, tmp_path_factory) -> Iterator[Gateway]:
    """A gateway (one per backend, shared by the SSO tests) whose console signs people in
    through the loopback OpenID Connect provider `oidc/idp.mjs` (started first, as it must know
    the gateway's callback URL; `gw.idp`). Same config as `gateway`, plus SSO_TOML."""
    workdir = tmp_path_factory.mktemp(f"sso-gateway-{backend}")
    port = free_port()
    redirect_url = f"http://127.0.0.1:{port}/auth/callback"
    client_secret = f"e2e-sso-client-{secrets.token_hex(16)}"
    idp = start_idp(free_port(), SSO_CLIENT_ID, client_secret, redirect_url)
    try:
        extra = SSO_TOML.format(
            issuer=idp.issuer,
            client_id=SSO_CLIENT_ID,
            client_secret=client_secret,
            redirect_url=redirect_url,
            label=SSO_LABEL,
        )
        gw = start_gateway(backend, mock_upstream, e2e_secrets, workdir, extra_toml=extra, port=port)
        gw.idp = idp
        try:
            yield gw
        finally:
            finish_gateway(gw)
    finally:
        idp.stop()
        (workdir / "idp.log").write_text(idp.output())
