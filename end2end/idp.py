"""A real OpenID Connect provider on loopback for the browser tests: `oidc/idp.mjs`, built on
the npm package `oidc-provider`, run with the machine's `node`. Plain helpers, no fixtures:

    ensure_installed()                      # npm ci in end2end/oidc when the lockfile changed
    with start_idp(free_port(), "gw", "s3cret", "http://127.0.0.1:4321/auth/callback") as idp:
        idp.issuer                          # http://127.0.0.1:<port>
        ...                                 # the relying party redirects the browser to idp
        idp_sign_in(page, "bob")            # login form -> back at the relying party

The people (login name -> sub, e-mail, groups) are the table PEOPLE in oidc/idp.mjs.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

IDP_DIR = Path(__file__).resolve().parent / "oidc"
_STAMP = IDP_DIR / "node_modules" / ".e2e-installed"
READY_TIMEOUT = 20.0


# --------------------------------------------------------------------------- install


def _lock_digest() -> str:
    h = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        h.update((IDP_DIR / name).read_bytes())
    return h.hexdigest()


def ensure_installed() -> None:
    """Runs `npm ci` in end2end/oidc unless node_modules was installed from the current
    package.json + package-lock.json (a stamp in node_modules holds their digest). Safe to
    call from several processes at once."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        raise RuntimeError("end2end/idp: node and npm are required (apt-get install nodejs npm)")
    want = _lock_digest()
    lock_path = Path(tempfile.gettempdir()) / f"ai-gateway-e2e-oidc-{hashlib.sha256(str(IDP_DIR).encode()).hexdigest()[:12]}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _STAMP.is_file() and _STAMP.read_text().strip() == want:
            return
        out = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=IDP_DIR,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if out.returncode != 0:
            raise RuntimeError(f"npm ci in {IDP_DIR} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        _STAMP.write_text(want + "\n")


# --------------------------------------------------------------------------- the provider


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Idp:
    """One `node oidc/idp.mjs` process. Use `start_idp(...)`, or `with Idp(...) as idp:`."""

    def __init__(
        self,
        port: int,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        post_logout_redirect_uri: str | None = None,
    ):
        self.port = port
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = redirect_uri
        self.post_logout_redirect_uri = post_logout_redirect_uri
        self.issuer: str | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen | None = None
        self._lines: list[str] = []
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    # endpoints (oidc-provider's default routes)
    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def authorization_endpoint(self) -> str:
        return f"{self.issuer}/auth"

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/token"

    @property
    def userinfo_endpoint(self) -> str:
        return f"{self.issuer}/me"

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/jwks"

    @property
    def end_session_endpoint(self) -> str:
        return f"{self.issuer}/session/end"

    def output(self) -> str:
        """Everything the process printed so far (stdout and stderr interleaved)."""
        return "".join(self._lines)

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.append(line)
            if not self._ready.is_set() and line.startswith("READY "):
                self.issuer = line.split(None, 1)[1].strip()
                self._ready.set()

    def start(self, timeout: float = READY_TIMEOUT) -> "Idp":
        if self._proc is not None:
            return self
        env = dict(os.environ)
        env.update(
            PORT=str(self.port),
            CLIENT_ID=self.client_id,
            CLIENT_SECRET=self.client_secret,
            REDIRECT_URI=self.redirect_uri,
            POST_LOGOUT_REDIRECT_URI=self.post_logout_redirect_uri or "",
        )
        started = time.monotonic()
        self._proc = subprocess.Popen(
            ["node", "idp.mjs"],
            cwd=IDP_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, name=f"idp-{self.port}", daemon=True)
        self._reader.start()
        deadline = started + timeout
        while not self._ready.wait(0.05):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                code = self._proc.poll()
                self.stop()
                why = f"exited with {code}" if code is not None else f"not ready after {timeout}s"
                raise RuntimeError(f"end2end/idp: node idp.mjs {why}; its output:\n{self.output()}")
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within 5 s."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._reader is not None:
            self._reader.join(timeout=5)

    def __enter__(self) -> "Idp":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def start_idp(
    port: int,
    client_id: str,
    client_secret: str,
    redirect_uri: str,
    post_logout_redirect_uri: str | None = None,
) -> Idp:
    """Installs the npm package when needed, starts the provider and waits for it to listen."""
    ensure_installed()
    return Idp(port, client_id, client_secret, redirect_uri, post_logout_redirect_uri).start()


# --------------------------------------------------------------------------- the browser side


def _origin(url: str) -> str:
    u = urllib.parse.urlsplit(url)
    return f"{u.scheme}://{u.netloc}"


def idp_sign_in(page, login: str, password: str = "any-password", timeout: float = 15_000) -> str:
    """On the IdP's sign-in page (where the relying party redirected the browser), signs in as
    `login` (a key of PEOPLE in oidc/idp.mjs; any password is accepted) and waits until the
    browser has left the IdP. Clicks through a consent page should one ever appear (this IdP
    grants consent itself). Returns the first URL outside the IdP the browser was sent to: the
    relying party's callback with its `code` and `state` (or `error`)."""
    page.wait_for_selector("input[name=login]", timeout=timeout)
    idp = _origin(page.url)
    left: list[str] = []

    def on_request(request) -> None:
        try:
            if not left and request.is_navigation_request() and _origin(request.url) != idp:
                if request.frame == page.main_frame:
                    left.append(request.url)
        except Exception:  # noqa: BLE001 - a request without a frame (service worker): not ours
            pass

    page.on("request", on_request)
    try:
        page.fill("input[name=login]", login)
        if page.locator("input[name=password]").count():
            page.fill("input[name=password]", password)
        page.click("form button[type=submit], form input[type=submit]")
        deadline = time.monotonic() + timeout / 1000
        while not left:
            if time.monotonic() > deadline:
                raise AssertionError(f"idp_sign_in({login!r}): still on the IdP after {timeout / 1000}s at {page.url}")
            try:
                if _origin(page.url) == idp:
                    error = page.locator("[data-idp=error]")
                    if error.count():
                        raise AssertionError(f"idp_sign_in({login!r}): the IdP refused: {error.inner_text()}")
                    consent = page.locator("form:has(input[name=prompt][value=consent]) button[type=submit]")
                    if consent.count():
                        consent.first.click()
            except AssertionError:
                raise
            except Exception:  # noqa: BLE001 - the page navigated away under us; look again
                pass
            page.wait_for_timeout(50)
        page.wait_for_url(lambda url: _origin(url) != idp, wait_until="commit", timeout=timeout)
    finally:
        page.remove_listener("request", on_request)
    return left[0]
