"""Budgets in the console and for SDK users: the admin sets a key's budget on the Spend
page (with and without JavaScript), sees spending against it, and a request that would
cross it reaches the `openai` SDK as a readable `budget_exceeded` error."""

from __future__ import annotations

import json
import secrets

import openai
import pytest
from playwright.sync_api import Page, expect

from conftest import CHAT_MODEL
from support import http_request

TIMEOUT_MS = 15_000
expect.set_options(timeout=TIMEOUT_MS)


def admin_api(gateway, method: str, path: str, body=None):
    status, _, raw = http_request(
        method,
        f"{gateway.url}/admin/v1{path}",
        body,
        headers={"Authorization": f"Bearer {gateway.master_key}"},
    )
    return status, json.loads(raw or b"null")


@pytest.fixture(params=["js", "no-js"])
def page(request, browser, gateway):
    js = request.param == "js"
    context = browser.new_context(java_script_enabled=js, base_url=gateway.url)
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    pg.js = js  # type: ignore[attr-defined]
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield pg
        assert errors == [], f"errors in the browser: {errors}"
    finally:
        context.close()


def test_admin_sets_a_budget_and_sdk_users_read_the_refusal(page: Page, gateway):
    tag = secrets.token_hex(4)
    status, team = admin_api(gateway, "POST", "/teams", {"name": f"spend-{tag}"})
    assert status == 201, team
    status, key = admin_api(gateway, "POST", "/keys", {"name": f"budgeted-{tag}", "team_id": team["id"]})
    assert status == 201, key
    client = gateway.openai(api_key=key["key"])
    for _ in range(2):
        client.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": "Hello there"}])

    page.goto("/login")
    page.fill("input[name=password]", gateway.admin_password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("h1")).to_have_text("Overview")
    page.goto("/spend")
    expect(page.locator("h1")).to_have_text("Spend")
    if page.js:  # type: ignore[attr-defined]
        expect(page.locator('.shell[data-hydrated="true"]')).to_have_count(1)
    form = page.locator("[data-testid=budget-form]")
    form.locator("select[name=scope]").select_option(value=f"key:{key['id']}")
    form.locator("input[name=amount_usd]").fill("5")
    form.locator("select[name=period]").select_option("monthly")
    form.locator("input[name=thresholds]").fill("50, 80, 100")
    form.get_by_role("button", name="Save budget").click()
    row = page.locator(f"tr[data-testid=budget][data-scope='key:{key['id']}']")
    expect(row).to_have_count(1)
    expect(row.locator("[data-testid=budget-spent]")).to_contain_text("/ $5.00")
    expect(row).to_contain_text("monthly")
    # The two calls before the budget existed count in its period: spending is the ledger's.
    status, budgets = admin_api(gateway, "GET", "/budgets")
    mine = next(b for b in budgets["data"] if b["scope_id"] == key["id"])
    assert mine["amount_usd"] == 5.0 and mine["period"] == "monthly"

    # A budget smaller than one request's worst case: the SDK user gets a readable error.
    status, _ = admin_api(
        gateway, "PUT", "/budgets",
        {"scope_type": "key", "scope_id": key["id"], "amount_usd": 0.000001, "period": "daily"},
    )
    assert status == 200
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model=CHAT_MODEL, messages=[{"role": "user", "content": "Hello again"}])
    err = refused.value
    assert err.status_code == 429
    assert err.code == "budget_exceeded"
    assert err.type == "insufficient_quota"
    assert "key budget" in str(err) and "resets at" in str(err)
    assert err.response.headers.get("x-should-retry") == "false"
