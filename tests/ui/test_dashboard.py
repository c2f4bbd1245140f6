"""The dashboard in a real browser: Debian's Chromium driven by Playwright against one real
`deskbell serve` per module, with a local receiver as the webhook channel's far end.

Each test waits on what the page shows (Playwright's auto-waiting `expect`), never on time.
Screenshots of every page, desktop and 375 px wide, go to tests/ui/artifacts/ (gitignored).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes import wait_until
from tests.fakes.receiver import Receiver
from tests.process import Deskbell, free_port

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")

ARTIFACTS = Path(__file__).parent / "artifacts"
ADMIN = "ui-admin-key-0123456789abcdefghijklmnop"
READER = "ui-reader-key-0123456789abcdefghijklmnop"
INGEST = "ui-ingest-key-0123456789abcdefghijklmnop"
CONFIG = """
channels:
  hook:
    type: webhook
    url: {url}
    allow_private_networks: true
    retry: {{max_attempts: 1}}
routes:
  - match: {{topic: billing}}
    to: [hook]
"""
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, receiver: Receiver) -> Iterator[Deskbell]:
    workdir = tmp_path_factory.mktemp("ui")
    config = workdir / "deskbell.yaml"
    config.write_text(CONFIG.format(url=receiver.url))
    port = free_port()
    env = {
        "DESKBELL_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'ui.db'}",
        "DESKBELL_CONFIG": str(config),
        "DESKBELL_API_KEYS": f"{ADMIN}:admin,{READER}:read,{INGEST}:ingest",
        "DESKBELL_SECRET_KEY": "ui-test-secret-0123456789abcdefghijklmnop",
        "DESKBELL_LOG_FORMAT": "json",
    }
    running = Deskbell(["serve"], env=env, workdir=workdir, port=port)
    try:
        yield running.wait_ready()
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield launched
        launched.close()


def logged_in(browser: Any, server: Deskbell, key: str, width: int = 1280) -> Any:
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.goto(f"{server.url}/ui")
    expect(page).to_have_url(f"{server.url}/ui/login")
    page.get_by_label("API key or OIDC access token").fill(key)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{server.url}/ui/requests")
    return page


@pytest.fixture
def admin(browser: Any, server: Deskbell) -> Iterator[Any]:
    page = logged_in(browser, server, ADMIN)
    yield page
    page.context.close()


def ingest(server: Deskbell, description: str, topic: str = "billing") -> str:
    response = httpx.post(
        f"{server.url}/v1/assistance-requests",
        json={"topic": topic, "description": description},
        headers={"authorization": f"Bearer {INGEST}"},
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def delivery_status(server: Deskbell, request_id: str) -> str:
    response = httpx.get(
        f"{server.url}/v1/assistance-requests/{request_id}",
        headers={"authorization": f"Bearer {ADMIN}"},
    )
    return str(response.json()["deliveries"][0]["status"])


def shoot(page: Any, name: str) -> None:
    """Desktop and 375 px screenshots; at 375 px the page must not scroll sideways."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}-desktop.png"), full_page=True)
    size = page.viewport_size
    page.set_viewport_size({"width": 375, "height": 800})
    page.screenshot(path=str(ARTIFACTS / f"{name}-375.png"), full_page=True)
    overflow = page.evaluate("document.documentElement.scrollWidth")
    page.set_viewport_size(size)
    assert overflow <= 375, f"{name} is {overflow} px wide at 375 px"


def test_login_refuses_a_wrong_key(browser: Any, server: Deskbell) -> None:
    page = browser.new_page()
    page.goto(f"{server.url}/ui/login")
    page.get_by_label("API key or OIDC access token").fill("not-a-key-0123456789abcdefghijklmn")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("unknown or revoked API key")
    shoot(page, "login")
    page.close()


def test_security_headers(server: Deskbell) -> None:
    response = httpx.get(f"{server.url}/ui/login")
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "same-origin"
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
    assert "max-age=" in cookie


def test_a_request_appears_without_reload_and_its_text_is_escaped(
    admin: Any, server: Deskbell, receiver: Receiver
) -> None:
    receiver.reply_with(200)
    dialogs: list[str] = []
    admin.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    admin.evaluate("window.__same_page = true")
    text = "<script>alert('x')</script> refund please"
    request_id = ingest(server, text)
    row = admin.locator("#rows tr", has_text="refund please")
    expect(row).to_be_visible()
    expect(row).to_contain_text("<script>alert('x')</script>")  # shown as text
    assert admin.evaluate("window.__same_page") is True  # htmx swapped rows, no reload
    assert dialogs == []
    # times are rewritten to the browser's zone, the ISO time kept in the title
    time_el = row.locator("time")
    assert time_el.get_attribute("title") == time_el.get_attribute("datetime")
    expect(time_el).to_have_attribute("data-local", "1")
    shoot(admin, "requests")

    # its timeline: delivery, every attempt, handoff; claim it
    row.get_by_role("link").click()
    expect(admin).to_have_url(f"{server.url}/ui/requests/{request_id}")
    wait_until(lambda: delivery_status(server, request_id) == "sent", what="the send")
    admin.reload()
    expect(admin.get_by_role("heading", name="hook sent")).to_be_visible()
    expect(admin.locator("article.delivery table")).to_contain_text("sent")
    admin.get_by_role("button", name="Claim").click()
    expect(admin.locator("section", has_text="Handoff")).to_contain_text("claimed by env-1")
    shoot(admin, "request")


def test_dead_letter_retried_one_and_all(admin: Any, server: Deskbell, receiver: Receiver) -> None:
    receiver.reply_with(400, "bad request")
    first = ingest(server, "goes dead first")
    second = ingest(server, "goes dead second")
    third = ingest(server, "goes dead third")
    for rid in (first, second, third):
        wait_until(lambda r=rid: delivery_status(server, r) == "dead", what="dead delivery")
    receiver.reply_with(200)
    admin.goto(f"{server.url}/ui/dead-letters")
    rows = admin.locator("tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.first).to_contain_text("400")
    shoot(admin, "dead-letters")
    rows.first.get_by_role("button", name="Retry").click()
    expect(admin.get_by_role("status")).to_contain_text("Retrying 1 delivery")
    wait_until(lambda: delivery_status(server, third) == "sent", what="the retried send")

    admin.get_by_role("button", name="Retry all matching…").click()
    expect(admin.locator("form.confirm")).to_contain_text("2 dead deliveries match")
    admin.get_by_role("button", name="Retry 2").click()
    expect(admin.get_by_role("status")).to_contain_text("Retrying 2 deliveries")
    for rid in (first, second):
        wait_until(lambda r=rid: delivery_status(server, r) == "sent", what="retried sends")
    admin.reload()
    expect(admin.locator("tbody")).to_contain_text("No dead deliveries")


def test_channel_test_send(admin: Any, server: Deskbell, receiver: Receiver) -> None:
    receiver.reply_with(200)
    before = len(receiver.requests)
    admin.goto(f"{server.url}/ui/channels")
    expect(admin.locator("article")).to_contain_text("webhook")
    expect(admin.locator("pre")).not_to_contain_text("127.0.0.1")  # the URL is a secret
    admin.get_by_role("button", name="Send a test to hook").click()
    expect(admin.get_by_role("status")).to_contain_text("Test send: sent")
    assert len(receiver.requests) == before + 1
    shoot(admin, "channels")


def test_config_edit_validate_activate_roll_back(admin: Any, server: Deskbell) -> None:
    admin.goto(f"{server.url}/ui/config")
    first = admin.locator("p", has_text="Active version").locator("strong").inner_text()
    editor = admin.get_by_label("Config (YAML", exact=False)
    original = editor.input_value()
    editor.fill(original.replace("to:\n  - hook", "to:\n  - nowhere"))
    admin.get_by_role("button", name="Validate").click()
    expect(admin.get_by_role("alert")).to_contain_text("routes[0]")
    expect(admin.get_by_role("alert")).to_contain_text("nowhere")
    shoot(admin, "config")
    fixed = original.replace("topic: billing", "topic: refunds")
    admin.get_by_label("Config (YAML", exact=False).fill(fixed)
    admin.get_by_role("button", name="Validate").click()
    expect(admin.get_by_text("The draft is valid.")).to_be_visible()
    admin.get_by_role("button", name="Save and activate").click()
    expect(admin.get_by_role("status")).to_contain_text("Activated a new version")
    active = admin.locator("p", has_text="Active version").locator("strong").inner_text()
    assert int(active) == int(first) + 1
    assert "refunds" in admin.get_by_label("Config (YAML", exact=False).input_value()
    admin.get_by_role("button", name=f"Roll back to version {first}").click()
    expect(admin.get_by_role("status")).to_contain_text(f"Version {first} is active again")
    assert "billing" in admin.get_by_label("Config (YAML", exact=False).input_value()
    admin.goto(f"{server.url}/ui/config?a={first}&b={active}")
    expect(admin.get_by_label("Diff")).to_contain_text("+    topic: refunds")


def test_create_and_revoke_a_key(browser: Any, admin: Any, server: Deskbell) -> None:
    admin.goto(f"{server.url}/ui/keys")
    admin.get_by_label("Name").fill("ui-made")
    admin.get_by_label("Scope").select_option("read")
    admin.get_by_role("button", name="Create key").click()
    key = admin.get_by_label("New key").input_value()
    assert len(key) >= 32
    ok = httpx.get(f"{server.url}/v1/channels", headers={"authorization": f"Bearer {key}"})
    assert ok.status_code == 200
    shoot(admin, "keys")
    holder = logged_in(browser, server, key)  # a session made with the new key
    admin.get_by_role("button", name="Revoke key ui-made").click()
    row = admin.locator("tr", has_text="ui-made")
    expect(row).to_contain_text("revoked")
    expect(admin.get_by_label("New key")).to_have_count(0)  # shown once only
    gone = httpx.get(f"{server.url}/v1/channels", headers={"authorization": f"Bearer {key}"})
    assert gone.status_code == 401
    holder.goto(f"{server.url}/ui/requests")  # its session ended with the key
    expect(holder).to_have_url(f"{server.url}/ui/login")
    holder.context.close()


def test_read_only_key_cannot_retry(browser: Any, server: Deskbell, receiver: Receiver) -> None:
    receiver.reply_with(400)
    request_id = ingest(server, "dead for the reader")
    wait_until(lambda: delivery_status(server, request_id) == "dead", what="dead delivery")
    page = logged_in(browser, server, READER)
    page.goto(f"{server.url}/ui/dead-letters")
    expect(page.locator("tbody tr").first).to_contain_text("400")
    expect(page.get_by_role("button", name="Retry")).to_have_count(0)
    expect(page.get_by_role("link", name="API keys")).to_have_count(0)
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
    delivery = httpx.get(
        f"{server.url}/v1/assistance-requests/{request_id}",
        headers={"authorization": f"Bearer {ADMIN}"},
    ).json()["deliveries"][0]["id"]
    refused = page.request.post(
        f"{server.url}/ui/deliveries/{delivery}/retry", form={"csrf_token": csrf}
    )
    assert refused.status == 403
    assert delivery_status(server, request_id) == "dead"
    page.context.close()
    receiver.reply_with(200)


def test_a_post_without_the_csrf_token_is_refused(admin: Any, server: Deskbell) -> None:
    refused = admin.request.post(f"{server.url}/ui/keys", form={"name": "csrf", "scope": "read"})
    assert refused.status == 403
    wrong = admin.request.post(
        f"{server.url}/ui/keys", form={"name": "csrf", "scope": "read", "csrf_token": "forged"}
    )
    assert wrong.status == 403
    keys = httpx.get(f"{server.url}/v1/api-keys", headers={"authorization": f"Bearer {ADMIN}"})
    assert "csrf" not in {k["name"] for k in keys.json()["items"]}


def test_every_control_has_a_label(admin: Any, server: Deskbell) -> None:
    """Inputs, selects and textareas have an accessible name; buttons have text."""
    for path in ("/ui/requests", "/ui/dead-letters", "/ui/channels", "/ui/config", "/ui/keys"):
        admin.goto(f"{server.url}{path}")
        unlabeled = admin.evaluate(
            """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                 .filter(e => !e.labels || e.labels.length === 0).map(e => e.name)"""
        )
        assert unlabeled == [], f"{path}: {unlabeled}"
