"""Load a YAML configuration file into a validated `Config`.

Loading runs in three steps, and every problem of every step is collected
into one `ConfigError`, each with its key path:

1. YAML parsing, with duplicate keys rejected (PyYAML keeps the last one
   silently, which would hide a second, conflicting security setting).
2. `${NAME}` and `${NAME:-default}` substitution in every string value. A
   value that is one reference and nothing else is read as a YAML scalar,
   so `workers: ${WORKERS}` with WORKERS=4 is the integer 4.
3. Validation into the typed models, plus checks across sections such as a
   route naming an upstream that does not exist.
"""

from __future__ import annotations

import difflib
import os
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ringwall.config.model import DUPLICATE_ROUTE_NAME, Config
from ringwall.errors import ConfigError, ConfigIssue, excerpt
from ringwall.gateway.upstream_token import load_signing_key

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _StrictLoader(yaml.SafeLoader):
    """A safe YAML loader that rejects a mapping with the same key twice."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the configuration file at `path`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigIssue("", f"cannot read {path}: {exc}")]) from exc
    return parse_config(text, environ)


def parse_config(text: str, environ: Mapping[str, str] | None = None) -> Config:
    """Validate configuration text; raise `ConfigError` listing every problem."""
    environ = os.environ if environ is None else environ
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_issue(exc)]) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue("", "expected a mapping of sections at the top level")])

    issues: list[ConfigIssue] = []
    data = _substitute(data, "", environ, issues)
    unresolved = [issue.path for issue in issues]
    issues.extend(_check_references(data))
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        # A value with an unset variable would only fail again as an invalid value.
        issues.extend(
            issue for issue in _validation_issues(exc, data) if issue.path not in unresolved
        )
        config = None
    issues.extend(_check_log_destinations(data))
    if config is not None and config.auth.upstream_token is not None:
        try:
            load_signing_key(config.auth.upstream_token.key_file)
        except ValueError as exc:
            issues.append(ConfigIssue("auth.upstream_token.key_file", str(exc)))
    if issues or config is None:
        raise ConfigError(_unique(issues))
    return config


def _check_log_destinations(data: dict[str, Any]) -> list[ConfigIssue]:
    """Check that every log file can be appended to, so a bad path fails the load, not a worker.

    Nothing is created here: an existing file must be writable, and a new
    one needs a writable directory. Values of the wrong type are left to
    validation.
    """
    logging = data.get("logging")
    logging = logging if isinstance(logging, dict) else {}
    access = logging.get("access")
    access = access if isinstance(access, dict) else {}
    audit = logging.get("audit")
    audit = audit if isinstance(audit, dict) else {}
    destinations = [
        ("logging.destination", logging.get("destination")),
        ("logging.access.destination", access.get("destination")),
        ("logging.audit.destination", audit.get("destination")),
    ]
    issues = []
    for path, destination in destinations:
        if not isinstance(destination, str) or destination in ("stdout", "stderr", "off", ""):
            continue
        if _ENV_REFERENCE.search(destination):
            continue  # an unset variable, reported already
        problem = _append_problem(Path(destination))
        if problem:
            issues.append(
                ConfigIssue(
                    path,
                    f"cannot append to '{excerpt(destination, 200)}': {problem}; "
                    "use stdout, stderr or a writable file path",
                )
            )
    return issues


def _append_problem(path: Path) -> str:
    """Return why `path` cannot be opened for appending, or "" if it can."""
    if path.exists():
        if path.is_dir():
            return "it is a directory"
        return "" if os.access(path, os.W_OK) else "the file is not writable"
    directory = path.parent
    if not directory.is_dir():
        return f"the directory {excerpt(str(directory), 200)!r} does not exist"
    return "" if os.access(directory, os.W_OK) else "the directory is not writable"


def _yaml_issue(exc: yaml.YAMLError) -> ConfigIssue:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
    return ConfigIssue(where, f"invalid YAML: {problem}")


def _substitute(
    value: Any, path: str, environ: Mapping[str, str], issues: list[ConfigIssue]
) -> Any:
    if isinstance(value, str):
        expanded = _expand(value, path, environ, issues)
        if expanded != value and _ENV_REFERENCE.fullmatch(value):
            return _read_scalar(expanded)
        return expanded
    if isinstance(value, dict):
        return {k: _substitute(v, _join(path, k), environ, issues) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, f"{path}[{i}]", environ, issues) for i, v in enumerate(value)]
    return value


def _read_scalar(text: str) -> Any:
    """Read a value that replaced a whole `${NAME}` as YAML: "4" is 4, "true" is True.

    Anything that is not a plain scalar (a list, a mapping, invalid YAML) stays text.
    """
    try:
        value = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError:
        return text
    return value if isinstance(value, str | int | float | bool) else text


def _expand(text: str, path: str, environ: Mapping[str, str], issues: list[ConfigIssue]) -> str:
    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        if value is not None and (value or default is None):
            return value
        if default is not None:
            return default
        issues.append(
            ConfigIssue(
                path,
                f"environment variable {name} is not set: set it, or write ${{{name}:-DEFAULT}}",
            )
        )
        return match.group(0)

    return _ENV_REFERENCE.sub(replace, text)


def _check_references(data: dict[str, Any]) -> list[ConfigIssue]:
    """Check that route names are unique and every route names a defined upstream."""
    upstreams = data.get("upstreams")
    names = set(upstreams) if isinstance(upstreams, dict) else set()
    routes = data.get("routes")
    if not isinstance(routes, list):
        return []
    issues = []
    route_names: set[str] = set()
    for index, route in enumerate(routes):
        if not isinstance(route, dict):
            continue
        route_name = route.get("name") or f"routes[{index}]"
        if isinstance(route_name, str):
            if route_name in route_names:
                issues.append(
                    ConfigIssue(
                        f"routes[{index}].name",
                        f"duplicate route name '{excerpt(route_name)}': "
                        "give each route its own name",
                    )
                )
            route_names.add(route_name)
        issues.extend(_check_route_auth(index, route, data))
        if not isinstance(route.get("upstream"), str):
            continue
        name = route["upstream"]
        if name not in names:
            known = ", ".join(sorted(names)) or "none defined"
            issues.append(
                ConfigIssue(
                    f"routes[{index}].upstream",
                    f"upstream '{excerpt(name)}' is not defined under upstreams (defined: {known})",
                )
            )
    return issues


def _check_route_auth(index: int, route: dict[str, Any], data: dict[str, Any]) -> list[ConfigIssue]:
    """Check that a route's authentication methods have what they need under `auth`."""
    path = f"routes[{index}].auth"
    value = route.get("auth")
    if value is None:
        return [
            ConfigIssue(
                path,
                "missing: every route states how callers authenticate. "
                "Write auth: none for a public route, or jwt, api_key, mtls or a list of them",
            )
        ]

    auth_section = data.get("auth")
    auth: dict[str, Any] = auth_section if isinstance(auth_section, dict) else {}
    issuer_section = auth.get("issuers")
    issuers: dict[str, Any] = issuer_section if isinstance(issuer_section, dict) else {}
    methods: object = value
    named_issuers: object = ()
    if isinstance(value, dict):
        methods = value.get("methods", ())
        named_issuers = value.get("issuers", ())
    if isinstance(methods, str):
        methods = [methods]
    if not isinstance(methods, list | tuple):
        return []

    issues = []
    if "jwt" in methods and not issuers:
        issues.append(ConfigIssue(path, "jwt needs at least one issuer under auth.issuers"))
    if "api_key" in methods and not auth.get("api_keys"):
        issues.append(ConfigIssue(path, "api_key needs auth.api_keys with the key file"))
    if "mtls" in methods:
        issues.extend(_check_mtls_needs(path, auth, data))

    if isinstance(named_issuers, list | tuple):
        for name in named_issuers:
            if name not in issuers:
                issues.append(
                    ConfigIssue(
                        f"{path}.issuers",
                        f"issuer '{excerpt(str(name))}' is not defined under auth.issuers",
                    )
                )
    return issues


def _check_mtls_needs(path: str, auth: dict[str, Any], data: dict[str, Any]) -> list[ConfigIssue]:
    """Check that an `mtls` route has `auth.mtls` and a listener that requests certificates."""
    issues = []
    if auth.get("mtls") is None:
        issues.append(
            ConfigIssue(
                path,
                "mtls needs auth.mtls, which lists the accepted certificates "
                "(write mtls: {allow: []} to accept every certificate the CA signed)",
            )
        )
    if not _client_certificates_requested(data):
        issues.append(
            ConfigIssue(
                path,
                "mtls needs server.tls with client_auth mode optional or required, "
                "for the listener or an sni entry; without it no request has a client certificate",
            )
        )
    return issues


def _client_certificates_requested(data: dict[str, Any]) -> bool:
    """Return whether the HTTPS listener or one of its sni entries requests client certificates."""
    server = data.get("server")
    tls = server.get("tls") if isinstance(server, dict) else None
    if not isinstance(tls, dict):
        return False
    sni = tls.get("sni")
    policies = [tls, *(sni if isinstance(sni, list) else [])]
    for policy in policies:
        client_auth = policy.get("client_auth") if isinstance(policy, dict) else None
        if isinstance(client_auth, dict) and client_auth.get("mode") in ("optional", "required"):
            return True
    return False


def _validation_issues(exc: ValidationError, data: dict[str, Any]) -> list[ConfigIssue]:
    issues = []
    for error in exc.errors(include_url=False):
        if error["type"] == DUPLICATE_ROUTE_NAME:
            continue  # reported with its key path by _check_references
        location_parts = tuple(error["loc"])
        if (
            error["type"] == "missing"
            and location_parts[-1:] == ("auth",)
            and location_parts[:1] == ("routes",)
        ):
            continue  # reported with advice by _check_route_auth
        location = _data_location(tuple(error["loc"]), data)
        path = _format_location(location)
        if error["type"] == "extra_forbidden":
            message = _unknown_key_message(location)
        else:
            message = _plain_message(error)
            value = error.get("input")
            if error["type"] != "missing" and not isinstance(value, dict | list | None):
                message += f" (got {excerpt(repr(value), 80)})"
        issues.append(ConfigIssue(path, message))
    return issues


# pydantic's messages for common type errors, in the words of a configuration file.
_TYPE_MESSAGES = {
    "missing": "missing required key",
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
}


def _plain_message(error: Any) -> str:
    """Return an error message without pydantic's type names and "Input should" phrasing."""
    kind = error["type"]
    context = error.get("ctx") or {}
    if kind in _TYPE_MESSAGES:
        return _TYPE_MESSAGES[kind]
    if kind == "too_short":
        count = context.get("min_length", 1)
        return f"expected at least {count} {'entry' if count == 1 else 'entries'}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        symbol = {
            "greater_than_equal": ">=",
            "greater_than": ">",
            "less_than_equal": "<=",
            "less_than": "<",
        }[kind]
        limit = next(iter(context.values()), "")
        return f"expected a value {symbol} {limit}"
    if kind == "literal_error":
        return f"expected {context.get('expected', 'one of the listed values')}"
    message: str = error["msg"]
    return message.removeprefix("Value error, ")


def _data_location(location: tuple[Any, ...], data: Any) -> tuple[Any, ...]:
    """Keep the parts of a pydantic error location that are keys or indexes of `data`.

    pydantic also names union members ("int", "literal['auto']") and
    validators in a location; those are not key paths a user can find.
    """
    kept = []
    node = data
    for index, part in enumerate(location):
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            kept.append(part)
            node = node[part]
        elif index == len(location) - 1 and isinstance(node, dict):
            kept.append(part)  # a missing or unknown key: still the right path
        else:
            node = None
    return tuple(kept)


def _format_location(location: tuple[Any, ...]) -> str:
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = _join(path, str(part))
    return path


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _unknown_key_message(location: tuple[Any, ...]) -> str:
    key = str(location[-1])
    allowed = _allowed_keys(location[:-1])
    if not allowed:
        return f"unknown key '{excerpt(key)}'"
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key '{excerpt(key)}': {hint}expected one of {', '.join(sorted(allowed))}"


def _allowed_keys(location: tuple[Any, ...]) -> list[str]:
    """Return the field names of the model found at `location`, or [] if none is."""
    annotation: Any = Config
    for part in location:
        model = _model_in(annotation)
        fields = _fields_by_key(model) if model is not None else {}
        if isinstance(part, str) and part in fields:
            annotation = fields[part].annotation
            continue
        origin = typing.get_origin(annotation)
        arguments = typing.get_args(annotation)
        if origin is dict and len(arguments) == 2:
            annotation = arguments[1]
        elif origin is tuple and arguments:
            annotation = arguments[0]
        else:
            return []
    model = _model_in(annotation)
    return list(_fields_by_key(model)) if model is not None else []


def _fields_by_key(model: type[BaseModel]) -> dict[str, Any]:
    """Return a model's fields by the key a file uses: the alias when there is one."""
    return {field.alias or name: field for name, field in model.model_fields.items()}


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        if isinstance(argument, type) and issubclass(argument, BaseModel):
            return argument
    return None


def _unique(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    return list(dict.fromkeys(issues))
