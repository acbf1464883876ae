"""Errors raised by the ingress package."""


class SwitchboardError(Exception):
    """The root of Switchboard's own errors."""


class ConfigError(SwitchboardError):
    """The environment or streams.yaml is not usable; the message says what to fix."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class EntryDecodeError(SwitchboardError):
    """A stream entry does not have the fields and types of its contract."""


class PublishError(SwitchboardError):
    """An entry could not be written to Redis."""
