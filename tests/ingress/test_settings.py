"""Settings from the environment: defaults, validation, secrets kept out of sight."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingress.errors import ConfigError
from ingress.settings import DEFAULT_MAX_BODY_BYTES, PACKAGED_STREAMS, Settings

ROOT = Path(__file__).resolve().parent.parent.parent


def test_defaults() -> None:
    """An empty environment gives the documented defaults."""
    settings = Settings.from_env({})
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.max_body_bytes == DEFAULT_MAX_BODY_BYTES
    assert settings.streams_path == PACKAGED_STREAMS
    assert settings.log_level == "info"
    assert settings.redis_url is None and settings.webhook_secrets == ()


def test_values_are_read() -> None:
    """Each variable lands in its setting; secrets split on commas (rotation)."""
    settings = Settings.from_env(
        {
            "REDIS_URL": "redis://r:6379/0",
            "DATABASE_URL": "postgresql://u@db/sb",
            "CHATWOOT_BASE_URL": "https://chat.example.com/",
            "CHATWOOT_API_TOKEN": "tok",
            "CHATWOOT_BOT_ID": "4",
            "CHATWOOT_WEBHOOK_SECRETS": "new, old ,",
            "MAX_BODY_BYTES": "1024",
            "PORT": "9000",
            "LOG_FORMAT": "json",
        }
    )
    assert settings.chatwoot_base_url == "https://chat.example.com"
    assert [s.reveal() for s in settings.webhook_secrets] == ["new", "old"]
    assert (settings.chatwoot_bot_id, settings.max_body_bytes, settings.port) == (4, 1024, 9000)


def test_every_problem_is_one_line_naming_the_variable() -> None:
    """All bad values are reported together, each line starting with its variable."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(
            {
                "REDIS_URL": "http://nope",
                "DATABASE_URL": "mysql://x",
                "CHATWOOT_BASE_URL": "chat.example.com",
                "CHATWOOT_BOT_ID": "four",
                "MAX_BODY_BYTES": "0",
                "PORT": "70000",
                "LOG_FORMAT": "xml",
                "LOG_LEVEL": "verbose",
            }
        )
    names = [line.split(":")[0] for line in caught.value.problems]
    assert names == [
        "REDIS_URL",
        "DATABASE_URL",
        "CHATWOOT_BASE_URL",
        "CHATWOOT_BOT_ID",
        "MAX_BODY_BYTES",
        "PORT",
        "LOG_FORMAT",
        "LOG_LEVEL",
    ]


def test_urls_with_passwords_are_not_echoed() -> None:
    """A malformed URL's error does not repeat the URL, which may hold a password."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"DATABASE_URL": "pg://user:hunter2@db/sb"})
    assert "hunter2" not in str(caught.value)


def test_secrets_never_show() -> None:
    """Neither repr nor str of the settings reveals a token or secret."""
    settings = Settings.from_env(
        {"CHATWOOT_API_TOKEN": "tok-123", "CHATWOOT_WEBHOOK_SECRETS": "sec-456"}
    )
    assert "tok-123" not in repr(settings) and "sec-456" not in repr(settings)
    assert "tok-123" not in str(settings.chatwoot_api_token)


def test_require_names_missing_settings() -> None:
    """A command that needs a setting says which variable to set."""
    with pytest.raises(ConfigError, match="CHATWOOT_BASE_URL is required"):
        Settings.from_env({}).require("chatwoot_base_url")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("whsec_a", [("whsec_a", None)], id="plain"),
        pytest.param("3:whsec_a,7:whsec_b,whsec_plain",
                     [("whsec_a", 3), ("whsec_b", 7), ("whsec_plain", None)], id="per-account"),
        pytest.param("3 :whsec_a", [("3 :whsec_a", None)], id="space-before-colon-is-plain"),
        pytest.param("3:whsec:with:colons", [("whsec:with:colons", 3)], id="colons-in-secret"),
        pytest.param("whsec:12:x", [("whsec:12:x", None)], id="colon-not-leading"),
        pytest.param("٣:whsec_a", [("٣:whsec_a", None)], id="non-ascii-digits-are-plain"),
        pytest.param("12", [("12", None)], id="digits-only-secret"),
    ],
)  # fmt: skip
def test_webhook_secrets_forms(raw: str, expected: list[tuple[str, int | None]]) -> None:
    """Only a leading ASCII `N:` binds a secret to account N; anything else is a plain secret."""
    secrets = Settings.from_env({"CHATWOOT_WEBHOOK_SECRETS": raw}).webhook_secrets
    assert [(s.reveal(), s.account) for s in secrets] == expected


def test_a_bound_entry_without_a_secret_is_refused_without_echoing() -> None:
    """`3:` alone is a mistake: the error names the entry, not the other secrets."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"CHATWOOT_WEBHOOK_SECRETS": "whsec_keep,3:"})
    assert caught.value.problems == [
        "CHATWOOT_WEBHOOK_SECRETS: entry 2 binds account 3 to no secret"
    ]


def test_no_secret_refuses_unless_unsigned_is_allowed() -> None:
    """Without secrets the ingress refuses to start, with one line naming both variables."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({}).require_webhook_auth()
    [line] = caught.value.problems
    assert "CHATWOOT_WEBHOOK_SECRETS" in line and "ALLOW_UNSIGNED_WEBHOOKS=1" in line
    Settings.from_env({"ALLOW_UNSIGNED_WEBHOOKS": "1"}).require_webhook_auth()
    Settings.from_env({"CHATWOOT_WEBHOOK_SECRETS": "s"}).require_webhook_auth()
    with pytest.raises(ConfigError):
        Settings.from_env({"ALLOW_UNSIGNED_WEBHOOKS": "0"}).require_webhook_auth()


def test_allow_unsigned_must_be_a_flag() -> None:
    """A typo in ALLOW_UNSIGNED_WEBHOOKS is an error, not silently off (or on)."""
    with pytest.raises(ConfigError, match="ALLOW_UNSIGNED_WEBHOOKS: must be 1 or 0"):
        Settings.from_env({"ALLOW_UNSIGNED_WEBHOOKS": "sure"})


@pytest.mark.parametrize("raw", ["debug", "info", "warning", "error", "WARNING"])
def test_log_level_names(raw: str) -> None:
    """LOG_LEVEL takes the four level names, in any case."""
    assert Settings.from_env({"LOG_LEVEL": raw}).log_level == raw.lower()


def test_packaged_streams_yaml_is_the_documented_one() -> None:
    """The streams.yaml inside the package (the default from any directory) is the same file
    as the repository's documented example: edit one, copy it over the other."""
    assert PACKAGED_STREAMS.read_text() == (ROOT / "streams.yaml").read_text(), (
        "ingress/streams.yaml and streams.yaml differ: cp streams.yaml ingress/streams.yaml"
    )


def test_streams_override() -> None:
    """SWITCHBOARD_STREAMS still names another file."""
    assert Settings.from_env({"SWITCHBOARD_STREAMS": "/x/s.yaml"}).streams_path == Path("/x/s.yaml")


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param({"HOME": "/home/ann"}, "/home/ann/.local/state/switchboard/servers.json",
                     id="per-user"),
        pytest.param({"HOME": "/home/ann", "XDG_STATE_HOME": "/st"},
                     "/st/switchboard/servers.json", id="xdg"),
        pytest.param({"HOME": "/home/ann", "SWITCHBOARD_HOME": "/srv/sb"},
                     "/srv/sb/servers.json", id="home-set"),
    ],
)  # fmt: skip
def test_servers_file_location(environ: dict[str, str], expected: str) -> None:
    """The servers file `up` writes is found without the working directory: per user, or
    under SWITCHBOARD_HOME when that is set."""
    assert Settings.from_env(environ).servers_file == Path(expected)
