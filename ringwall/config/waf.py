"""Configuration of the WAF layer: ModSecurity with the OWASP Core Rule Set.

One `WafConfig` is the WAF policy of a route or of a listener. Each distinct
policy gets its own compiled rule set (see `ringwall.edge.waf.engine`), so
routes that share a policy share the rules in memory.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, field_validator, model_validator

from ringwall.config.types import ByteSize

# An integer setting: YAML's true and false are not read as 1 and 0.
Count = Annotated[int, Strict()]

# A SecLang variable such as ARGS:password, REQUEST_HEADERS:User-Agent or
# REQUEST_COOKIES:/^session_/. It ends up inside a quoted SecLang action, so
# quotes, commas, backslashes and whitespace are not accepted.
_TARGET = re.compile(r"^[A-Z_]+(?::[^\s\"',\\;]+)?$")
# CRS tags such as attack-sqli, paranoia-level/2 or OWASP_CRS/WEB_ATTACK/SQL_INJECTION.
_TAG = re.compile(r"^[A-Za-z0-9_./-]{1,128}$")
# ModSecurity rule ids are positive integers, and CRS uses 6 digits.
MAX_RULE_ID = 9_999_999


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TargetExclusion(_Model):
    """One variable that one rule no longer inspects, like `ctl:ruleRemoveTargetById`."""

    id: Count = Field(ge=1, le=MAX_RULE_ID)
    target: str

    @field_validator("target")
    @classmethod
    def _check_target(cls, value: str) -> str:
        if not _TARGET.match(value):
            raise ValueError(
                f"invalid target {value[:64]!r}: expected a variable such as ARGS:password "
                "or REQUEST_HEADERS:User-Agent, without quotes, commas or spaces"
            )
        return value


class WafExclusions(_Model):
    """Rules switched off for false positives: whole rules by id or tag, or single targets."""

    ids: tuple[Annotated[int, Strict(), Field(ge=1, le=MAX_RULE_ID)], ...] = ()
    tags: tuple[str, ...] = ()
    targets: tuple[TargetExclusion, ...] = ()

    @field_validator("tags")
    @classmethod
    def _check_tags(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for tag in value:
            if not _TAG.match(tag):
                raise ValueError(
                    f"invalid tag {tag[:64]!r}: expected a CRS tag such as attack-sqli "
                    "(letters, digits, '_', '.', '/', '-')"
                )
        return value


class WafConfig(_Model):
    """The WAF policy of a route or listener.

    A request body above `max_body_bytes` is rejected with 413 and a request
    with more than `max_args` arguments with 400, in both modes, so that no
    request passes uninspected.
    """

    enabled: bool = True
    # block: a request whose anomaly score reaches the threshold gets 403.
    # detect: matches are logged and the request continues.
    mode: Literal["block", "detect"] = "block"
    paranoia: Count = Field(1, ge=1, le=4)
    inbound_anomaly_threshold: Count = Field(5, ge=1, le=10_000)
    exclusions: WafExclusions = WafExclusions()
    max_body_bytes: ByteSize = Field(128 * 1024, ge=0, le=64 * 1024 * 1024)
    max_args: Count = Field(255, ge=1, le=10_000)
    # Custom SecLang files, loaded after the CRS rule files, in this order.
    rules_files: tuple[Path, ...] = ()

    @field_validator("rules_files")
    @classmethod
    def _check_rules_files(cls, value: tuple[Path, ...]) -> tuple[Path, ...]:
        for path in value:
            if not path.is_file():
                raise ValueError(f"rules file {str(path)[:200]!r} not found or not a file")
        return value

    @model_validator(mode="after")
    def _check_exclusion_ids(self) -> WafConfig:
        if 949110 in self.exclusions.ids and self.mode == "block":
            raise ValueError(
                "exclusions.ids: removing rule 949110 turns off blocking, "
                "so use mode: detect instead"
            )
        return self
