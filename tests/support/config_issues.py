"""Helpers for tests of configuration load errors."""

import pytest

from ringwall.config import parse_config
from ringwall.errors import ConfigError, ConfigIssue


def issues_of(text: str, environ: dict[str, str] | None = None) -> list[ConfigIssue]:
    """Parse the YAML `text`, expect a `ConfigError` and return its issues."""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ or {})
    return caught.value.issues


def issue_at(issues: list[ConfigIssue], path: str) -> ConfigIssue:
    """Return the first issue at the config path `path`, failing the test if there is none."""
    matching = [issue for issue in issues if issue.path == path]
    assert matching, f"no issue at {path!r} in {issues}"
    return matching[0]
