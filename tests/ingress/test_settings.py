"""Settings from the environment: defaults, validation, secrets kept out of sight."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingress.errors import ConfigError
from ingress.settings import DEFAULT_MAX_BODY_BYTES, Settings


def test_defaults() -> None:
    """An empty environment gives the documented defaults."""
    settings = Settings.from_env({})
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.max_body_bytes == DEFAULT_MAX_BODY_BYTES
    assert settings.streams_path == Path("streams.yaml")
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
