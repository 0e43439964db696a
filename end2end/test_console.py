"""The console in Chromium (Debian's, driven by Playwright): sign in, the Overview, sign
out, a wrong password — once hydrated (the WASM bundle is served and runs) and once with
JavaScript off (every form still works as a plain POST → redirect → GET)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from conftest import CHAT_MODEL, CONFIGURED_MODELS

TIMEOUT_MS = 15_000
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(params=["js", "no-js"])
def page(request, browser, gateway):
    js = request.param == "js"
    context = browser.new_context(java_script_enabled=js, base_url=gateway.url)
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    pg.js = js  # type: ignore[attr-defined]
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    failed: list[str] = []
    # With JavaScript off, Chromium refuses the hydration script itself and says "csp";
    # a navigation aborts loads still in flight (the favicon): neither is a failure.
    pg.on(
        "requestfailed",
        lambda r: None
        if (not js and r.resource_type == "script" and r.failure == "csp") or r.failure == "net::ERR_ABORTED"
        else failed.append(f"{r.method} {r.url}: {r.failure}"),
    )
    pg.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 500 else None)
    try:
        yield pg
        assert errors == [], f"errors in the browser: {errors}"
        assert failed == [], f"failed requests: {failed}"
    finally:
        context.close()


def wait_hydrated(page: Page) -> None:
    """With JavaScript: the layout says hydration ran. Without: it stays server-rendered."""
    if page.js:  # type: ignore[attr-defined]
        expect(page.locator('.shell[data-hydrated="true"]')).to_have_count(1)
    else:
        expect(page.locator(".shell")).to_have_attribute("data-hydrated", "false")


def sign_in(page: Page, password: str) -> None:
    page.goto("/login")
    expect(page.locator("input[name=username]")).to_have_value("admin")
    page.fill("input[name=password]", password)
    page.get_by_role("button", name="Sign in").click()


def test_sign_in_and_sign_out(page: Page, gateway):
    # Signed out, the Overview sends the visitor to the sign-in page.
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login$"))

    sign_in(page, gateway.admin_password)
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.locator("h1")).to_have_text("Overview")
    wait_hydrated(page)
    expect(page.get_by_role("navigation").get_by_role("link")).to_have_text(
        ["Overview", "My keys", "Team", "Users & roles", "Spend", "Audit", "Models", "Settings"]
    )

    # Navigate within the console and come back: the session holds.
    page.get_by_role("link", name="My keys").click()
    expect(page).to_have_url(re.compile(r"/keys$"))
    expect(page.locator("h1")).to_have_text("My keys")
    page.get_by_role("link", name="Overview").click()
    expect(page).to_have_url(re.compile(r"/$"))
    expect(page.locator("h1")).to_have_text("Overview")

    page.locator("[data-testid=sign-out]").click()
    expect(page).to_have_url(re.compile(r"/login\?signed_out=1$"))
    expect(page.get_by_text("You are signed out.")).to_be_visible()

    # The session is gone on the server, not only in the page.
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login$"))
    page.goto("/keys")
    expect(page).to_have_url(re.compile(r"/login$"))


def test_overview_shows_user_stats_and_models(page: Page, gateway):
    sign_in(page, gateway.admin_password)
    expect(page).to_have_url(re.compile(r"/$"))
    wait_hydrated(page)
    expect(page.locator("[data-testid=who]")).to_have_text(re.compile(r"admin\s*·\s*admin"))
    for stat in ("stat-models", "stat-requests", "stat-tokens"):
        expect(page.locator(f"[data-testid={stat}] .value")).to_have_text(re.compile(r"^\d+$"))
    expect(page.locator("[data-testid=stat-models] .value")).to_have_text(str(len(CONFIGURED_MODELS)))
    table = page.locator("table")
    for model in CONFIGURED_MODELS:
        expect(table.get_by_role("cell", name=model, exact=True)).to_have_count(1)

    # After a client-side (or, without JavaScript, a full) navigation, too.
    page.get_by_role("link", name="My keys").click()
    expect(page.locator("h1")).to_have_text("My keys")
    page.get_by_role("link", name="Overview").click()
    expect(page.get_by_role("cell", name=CHAT_MODEL, exact=True)).to_have_count(1)


def test_wrong_password_is_refused(page: Page, gateway):
    sign_in(page, gateway.admin_password + "-wrong")
    expect(page).to_have_url(re.compile(r"/login\?error=invalid$"))
    expect(page.locator("[data-testid=login-error]")).to_be_visible()
    expect(page.locator("[data-testid=login-error]")).to_have_text("Invalid user name or password.")
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login$"))


def test_site_assets_are_served(gateway):
    """The hydration bundle the pages name (script and WASM) is served, with the right types."""
    status, _, html = gateway.request("GET", "/login", auth=False)
    assert status == 200
    page = html.decode()
    refs = set(re.findall(r'(/pkg/[\w.-]+\.(?:js|wasm))', page))
    assert any(r.endswith(".js") for r in refs) and any(r.endswith(".wasm") for r in refs), refs
    for path in sorted(refs):
        status, headers, body = gateway.request("GET", path, auth=False)
        assert status == 200, f"{path} (named by the page) answers {status}"
        kind = "application/wasm" if path.endswith(".wasm") else "javascript"
        assert kind in headers.get("Content-Type", ""), (path, headers.get("Content-Type"))
        assert len(body) > 1000, path
