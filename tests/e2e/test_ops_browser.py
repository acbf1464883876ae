"""The ops page in a real browser (headless Chromium) against a running pipeline started
as a user starts it: a webhook sent, its conversation found in the list, its timeline
showing the agent's reply. The screenshot is kept in the test's tmp dir, and copied to
docs/ops-page.png with SWITCHBOARD_SCREENSHOT=1."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from tests import services
from tests.e2e import browser
from tests.e2e.deployment import SWITCHBOARD, Deployment, deployment
from tests.e2e.test_handoff import act

__all__ = ["deployment"]  # the fixture
pytestmark = pytest.mark.e2e
TOKEN = "browser-ops-token"
DOCS = services.ROOT / "docs" / "ops-page.png"
CONVERSATION = 3044
CUSTOMER = {"id": 7014, "name": "Grace O'Malley", "phone_number": "+447700900123"}
ASKED = "Is order <b>#4471</b> shipped? <script>alert(1)</script>"


@pytest.fixture
def chromium() -> str:
    found = browser.chromium()
    if found is None:
        # In CI (.ci/run installs it) a missing browser is a failure, never a skip.
        if os.environ.get("CI") or os.environ.get("SWITCHBOARD_CI"):
            pytest.fail("chromium is not installed, and this is CI: .ci/run installs it")
        pytest.skip("chromium is not installed (apt-get install chromium); CI installs it")
    return found


def test_a_webhook_its_conversation_and_its_reply_on_the_ops_page(
    chromium: str, deployment: Deployment, tmp_path: Path
) -> None:
    d = deployment
    port = services.free_port()
    d.env["OPS_TOKEN"] = TOKEN
    ops = d.start("ops", [SWITCHBOARD, "ops", "--port", str(port)])
    site = f"http://127.0.0.1:{port}"
    services.wait_http(f"{site}/login", ops)
    # Chatwoot (the fake) sends the signed webhooks, for a customer it knows.
    act(d, "inboxes", inbox=14, lock_to_single_conversation=False, active_bot=True)
    act(d, "conversations", conversation=CONVERSATION, inbox=14, channel="Channel::Whatsapp",
        status="pending", contact=CUSTOMER, source_id="447700900123")  # fmt: skip
    act(d, "customer", conversation=CONVERSATION, content=ASKED)

    def replied() -> bool:
        shown = httpx.get(f"{site}/api/conversations/3/{CONVERSATION}",
                          headers={"authorization": f"Bearer {TOKEN}"})  # fmt: skip
        return shown.status_code == 200 and any(
            e["kind"] == "reply" and e["fields"]["status"] == "sent" for e in shown.json()["events"]
        )

    d.wait_for("the reply, as the ops app sees it", replied)
    with browser.browser(chromium, tmp_path / "profile") as page:
        page.open(f"{site}/")
        assert page.url().endswith("/login")  # signed out: the sign-in form
        page.type("#token", TOKEN)
        page.click("button[type=submit]")
        assert "Pipeline health" in page.text("h1")
        assert "persist" in page.text("#streams")
        page.screenshot(tmp_path / "ops-health.png")

        page.open(f"{site}/conversations")
        page.type("#q", "grace")  # part of the contact's name, any case
        page.click("form.filters button[type=submit]")
        listed = page.text("#conversations")
        assert f"3/{CONVERSATION}" in listed and "Grace O'Malley" in listed
        page.click(f'#conversations a[href="/conversations/3/{CONVERSATION}"]')
        timeline = page.text("#timeline")
        assert "message_created applied" in timeline
        assert f"turn\t3:{CONVERSATION}:" in timeline
        assert f"You said: {ASKED}" in timeline and "sent after 1 attempt(s)" in timeline
        # The customer's markup is shown as text and never became an element.
        assert page.evaluate("document.querySelectorAll('script, b').length") == 0
        shot = tmp_path / "ops-page.png"
        page.screenshot(shot)
    assert shot.read_bytes().startswith(b"\x89PNG")
    if os.environ.get("SWITCHBOARD_SCREENSHOT") == "1":
        DOCS.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, DOCS)
