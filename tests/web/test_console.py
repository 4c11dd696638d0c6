"""The operator console at /admin in real Chromium: create a team and a key, grant credits, the
new key submits jobs, the usage chart and the failed-jobs table show them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from tests.utils.jobs import edit_body, submit_and_wait
from tests.utils.servers import LiveServer
from tests.utils.teams import ADMIN_SERVER, ADMIN_TOKEN, IMAGE, MASK, admin_client, key_client
from tests.web.conftest import screenshot

if TYPE_CHECKING:
    from playwright.sync_api import Page

LIVE_SETTINGS = ADMIN_SERVER


def sign_in(page: Page, live: LiveServer, token: str = ADMIN_TOKEN) -> None:
    page.goto(live.url + "/admin")
    page.fill("#admin-token", token)
    page.click("#token-form button[type=submit]")


def test_a_wrong_token_is_refused_in_the_page(page: Page, live: LiveServer) -> None:
    sign_in(page, live, "not-the-operator-token-000000")
    page.wait_for_selector("#console-error:not([hidden])")
    assert "Invalid operator token" in page.inner_text("#console-error")
    assert page.locator("#teams-table tbody tr").count() == 0


def test_create_team_key_credits_and_see_the_usage(page: Page, live: LiveServer) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live.url)
    sign_in(page, live)
    page.wait_for_function("() => document.getElementById('signed-in').textContent === 'Signed in'")

    page.fill("#team-name", "Acme Studio")
    page.fill("#team-email", "ops@acme.test")
    page.fill("#team-customer", "cus_acme")
    page.click("#team-form button[type=submit]")
    page.wait_for_selector("#team-detail:not([hidden])")
    assert page.inner_text("#team-title") == "Acme Studio"
    assert page.inner_text("#team-balance") == "0 credits"
    row = page.locator("#teams-table tbody tr", has_text="Acme Studio")
    assert row.count() == 1 and "cus_acme" in row.inner_text()

    page.fill("#credits-amount", "20")
    page.fill("#credits-reason", "welcome")
    page.click("#credits-form button[type=submit]")
    page.wait_for_function("() => document.getElementById('team-balance').textContent === '20 credits'")
    assert "20" in page.locator("#teams-table tbody tr", has_text="Acme Studio").inner_text()

    page.fill("#key-name", "acme-prod")
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#new-key:not([hidden])")
    key = page.inner_text("#new-key-value")
    assert key.startswith("afk_")
    page.click("#new-key-copy")
    page.wait_for_function("() => document.getElementById('new-key-copied').textContent === 'Copied.'")
    assert page.evaluate("navigator.clipboard.readText()") == key
    assert page.locator("#keys-table tbody tr", has_text="acme-prod").count() == 1

    # The customer uses the key: one job succeeds, one fails (its image cannot be fetched).
    with key_client(live.url, key) as client:
        me = client.get("/v2/me").json()
        assert me["team"]["credits"] == 20 and me["user"]["email"] == "ops@acme.test"
        done = submit_and_wait(client, edit_body(IMAGE, MASK))
        failed = submit_and_wait(client, edit_body("http://127.0.0.1:9/gone.png", MASK))
    assert done["status"] == "COMPLETED" and failed["errorCode"] == "invalid_input"

    page.click("#teams-refresh")
    page.wait_for_function("() => document.getElementById('team-balance').textContent === '11 credits'")
    today = page.locator("#usage-chart g.day").last
    page.wait_for_function(
        "() => { const g = [...document.querySelectorAll('#usage-chart g.day')].pop();"
        " return g && g.dataset.total === '2'; }"
    )
    assert today.get_attribute("data-completed") == "1" and today.get_attribute("data-failed") == "1"
    assert today.locator("rect").count() == 2  # a green and a red segment
    assert page.locator("#usage-chart g.day").count() == 14
    assert "9 credits captured" in page.inner_text("#usage-summary")
    failed_row = page.locator(f"#failed-table tbody tr[data-job-id='{failed['id']}']")
    assert failed_row.count() == 1
    assert failed_row.locator(".error-code").inner_text() == "invalid_input"
    assert "Acme Studio" in failed_row.inner_text()
    shot = screenshot(page, "console")
    assert shot.stat().st_size > 0

    # Revoking from the console stops the key at once.
    page.locator("#keys-table tbody tr", has_text="acme-prod").locator("button.revoke").click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#keys-table tbody tr')]"
        ".some(r => r.textContent.includes('revoked'))"
    )
    assert httpx.get(f"{live.url}/v2/me", headers={"X-API-Key": key}).status_code == 401
    with admin_client(live.url) as admin:
        trail = admin.get("/admin/v1/audit", params={"teamId": me["team"]["id"]}).json()["entries"]
    assert [e["action"] for e in trail][:2] == ["key.revoke", "key.create"]
