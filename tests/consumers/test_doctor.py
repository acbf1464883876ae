"""`switchboard doctor` checks Chatwoot too (against the fake Chatwoot, which answers
/api/v1/profile as Chatwoot does), and says which version runs; it never prints a secret."""

from __future__ import annotations

import io

import pytest

from consumers import doctor
from consumers.embedded import free_port
from ingress.settings import Settings
from tests import chatwoot
from tests.conftest import BOT_TOKEN, USER_TOKEN, Fake
from tests.consumers.test_cli import run


async def check(environ: dict[str, str]) -> tuple[str, list[str]]:
    out = io.StringIO()
    report = doctor.Report(out)
    await doctor.chatwoot(Settings.from_env(environ), report)
    return out.getvalue(), report.problems


def chatwoot_env(fake: Fake, **changes: str) -> dict[str, str]:
    env = {
        "CHATWOOT_BASE_URL": fake.url,
        "CHATWOOT_API_TOKEN": BOT_TOKEN,
        "CHATWOOT_USER_TOKEN": USER_TOKEN,
        "CHATWOOT_WEBHOOK_SECRETS": chatwoot.SECRET,
    }
    return {k: v for k, v in (env | changes).items() if v}


async def test_a_sound_chatwoot_setup_passes(fake: Fake) -> None:
    """Reachable, bot token valid (Chatwoot refuses it on /profile as a bot's: valid),
    user token valid, a webhook secret set: no problem, and no secret in the output."""
    out, problems = await check(chatwoot_env(fake))
    assert problems == []
    assert f"chatwoot: {fake.url} reachable" in out
    assert "chatwoot bot token: ok (an agent bot's)" in out
    assert "chatwoot user token: ok" in out
    assert "webhook secrets: 1 configured" in out
    for secret in (BOT_TOKEN, USER_TOKEN, chatwoot.SECRET):
        assert secret not in out
    calls = [r for r in fake.requests() if r["path"] == "/api/v1/profile"]
    assert [r["method"] for r in calls] == ["GET", "GET"]  # harmless: reads only


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        pytest.param({"CHATWOOT_API_TOKEN": "wrong"}, "chatwoot bot token: refused",
                     id="bad-bot-token"),
        pytest.param({"CHATWOOT_USER_TOKEN": "wrong"}, "chatwoot user token: refused",
                     id="bad-user-token"),
        pytest.param({"CHATWOOT_WEBHOOK_SECRETS": ""}, "CHATWOOT_WEBHOOK_SECRETS is not set",
                     id="no-secret"),
        pytest.param({"CHATWOOT_API_TOKEN": ""}, "CHATWOOT_API_TOKEN not set", id="no-token"),
    ],
)  # fmt: skip
async def test_each_fault_is_one_problem(fake: Fake, changes: dict[str, str], problem: str) -> None:
    """A wrong token, a missing secret or token: one problem line naming it."""
    out, problems = await check(chatwoot_env(fake, **changes))
    [found] = problems
    assert found.startswith(problem)
    assert "wrong" not in out + found


async def test_a_user_token_as_the_bot_token_works_with_a_caveat(fake: Fake) -> None:
    """A user's token in CHATWOOT_API_TOKEN works (replies are posted as that user): said."""
    out, problems = await check(chatwoot_env(fake, CHATWOOT_API_TOKEN=USER_TOKEN))
    assert problems == [] and "it is a user's token" in out


async def test_an_unreachable_chatwoot_is_one_problem() -> None:
    """Nothing listening at CHATWOOT_BASE_URL: one problem saying so."""
    base = f"http://127.0.0.1:{free_port()}"
    _, problems = await check({"CHATWOOT_BASE_URL": base, "CHATWOOT_API_TOKEN": "t",
                               "CHATWOOT_WEBHOOK_SECRETS": "s"})  # fmt: skip
    [problem] = problems
    assert problem.startswith(f"chatwoot: {base} cannot be reached")


async def test_unsigned_webhooks_allowed_is_no_problem(fake: Fake) -> None:
    """No secret but ALLOW_UNSIGNED_WEBHOOKS: said, not a problem."""
    out, problems = await check(chatwoot_env(fake, CHATWOOT_WEBHOOK_SECRETS="",
                                             ALLOW_UNSIGNED_WEBHOOKS="1"))  # fmt: skip
    assert problems == [] and "unsigned webhooks allowed" in out


def test_doctor_prints_the_version(process_env: dict[str, str], fake: Fake) -> None:
    """The command's first line names the version; all well, status 0."""
    done = run(process_env | chatwoot_env(fake), "doctor")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"switchboard {doctor.VERSION}"
