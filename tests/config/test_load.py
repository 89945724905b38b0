"""Tests for ringwall.config.load: YAML parsing, key paths in errors, `${NAME}` substitution."""

from pathlib import Path

import pytest

from ringwall.config import Config, load_config, parse_config
from ringwall.errors import ConfigError, ConfigIssue
from tests.support.config_issues import issue_at, issues_of

VALID = """\
server:
  listen: "[::1]:8443"
  workers: 2
  trusted_proxies: [10.0.0.0/8, "::1"]
  request_id_header: X-Trace-Id
  limits:
    max_body_bytes: 2MiB
    max_header_count: 50
  timeouts:
    head: 5s
    idle: 2m
logging:
  level: debug
  destination: stdout
  access:
    enabled: false
upstreams:
  api:
    targets: [http://127.0.0.1:9000, http://127.0.0.1:9001]
    balance: least_connections
    retries: 2
    timeouts:
      connect: 500ms
    passive_health:
      failures: 3
      cooldown: 30s
    health_check:
      path: /healthz
      interval: 10s
routes:
  - name: accounts
    hosts: [API.Example.com]
    path: /accounts/{id}
    match: template
    methods: [get, put]
    upstream: api
    auth: none
  - path: /static
    strip_prefix: true
    max_body_bytes: 0
    upstream: api
    auth: none
"""

UPSTREAM = """\
upstreams:
  api:
    targets: [http://127.0.0.1:9000]
"""


def paths_of(issues: list[ConfigIssue]) -> list[str]:
    return [issue.path for issue in issues]


@pytest.fixture
def valid() -> Config:
    return parse_config(VALID, {})


def test_valid_server(valid: Config) -> None:
    assert valid.server.listen == ("::1", 8443)
    assert valid.server.workers == 2
    assert valid.server.request_id_header == "X-Trace-Id"
    assert valid.server.limits.max_body_bytes == 2 * 1024 * 1024
    assert valid.server.limits.max_header_count == 50
    assert valid.server.timeouts.head == 5.0
    assert valid.server.timeouts.idle == 120.0


def test_valid_trusted_proxies(valid: Config) -> None:
    assert [str(network) for network in valid.server.trusted_proxies] == ["10.0.0.0/8", "::1/128"]


def test_valid_logging(valid: Config) -> None:
    assert valid.logging.level == "debug"
    assert valid.logging.destination == "stdout"
    assert valid.logging.access.enabled is False


def test_valid_upstream(valid: Config) -> None:
    upstream = valid.upstreams["api"]

    assert [target.authority for target in upstream.targets] == [
        "127.0.0.1:9000",
        "127.0.0.1:9001",
    ]
    assert upstream.balance == "least_connections"
    assert upstream.retries == 2
    assert upstream.timeouts.connect == 0.5
    assert upstream.passive_health.failures == 3
    assert upstream.passive_health.cooldown == 30.0
    assert upstream.health_check is not None
    assert upstream.health_check.path == "/healthz"
    assert upstream.health_check.interval == 10.0


def test_valid_routes(valid: Config) -> None:
    first, second = valid.routes

    assert first.name == "accounts"
    assert first.hosts == ("api.example.com",)
    assert first.match == "template"
    assert first.methods == ("GET", "PUT")
    assert second.name == "routes[1]"
    assert second.strip_prefix is True
    assert second.max_body_bytes == 0


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_file_defaults(text: str) -> None:
    config = parse_config(text, {})

    assert config == Config()


def test_load_config_file(tmp_path: Path) -> None:
    path = tmp_path / "ringwall.yaml"
    path.write_text(VALID, encoding="utf-8")

    config = load_config(path, {})

    assert config == parse_config(VALID, {})


def test_load_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"

    with pytest.raises(ConfigError, match="cannot read") as caught:
        load_config(path, {})

    assert str(path) in str(caught.value)


def test_load_config_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"logging:\n  destination: caf\xe9\n")

    with pytest.raises(ConfigError, match="cannot read"):
        load_config(path, {})


@pytest.mark.parametrize(
    ("text", "path", "suggestion"),
    [
        ("servr: {}\n", "servr", "server"),
        ("server:\n  listn: 127.0.0.1:80\n", "server.listn", "listen"),
        (
            "server:\n  limits:\n    max_body_byte: 1\n",
            "server.limits.max_body_byte",
            "max_body_bytes",
        ),
        ("logging:\n  access:\n    enable: false\n", "logging.access.enable", "enabled"),
        (
            UPSTREAM + "    passive_health:\n      failure: 2\n",
            "upstreams.api.passive_health.failure",
            "failures",
        ),
        (
            UPSTREAM + "    health_check:\n      pth: /x\n",
            "upstreams.api.health_check.pth",
            "path",
        ),
        (
            UPSTREAM
            + "routes:\n  - path: /\n    upstream: api\n    auth: none\n    method: [GET]\n",
            "routes[0].method",
            "methods",
        ),
    ],
)
def test_unknown_key_suggestion(text: str, path: str, suggestion: str) -> None:
    issue = issue_at(issues_of(text), path)

    assert "unknown key" in issue.message
    assert f"did you mean {suggestion!r}?" in issue.message
    assert suggestion in issue.message.split("expected one of ", 1)[1]


def test_unknown_key_no_close_match() -> None:
    issue = issue_at(issues_of("zzzzzz: 1\n"), "zzzzzz")

    assert "did you mean" not in issue.message
    assert (
        "expected one of admin, auth, limits, logging, routes, security_headers, server, upstreams"
        in issue.message
    )


def test_unknown_key_truncated() -> None:
    key = "k" * 300

    issue = issue_at(issues_of(f"{key}: 1\n"), key)

    assert "k" * 64 + "..." in issue.message
    assert "k" * 65 not in issue.message


def test_route_unknown_upstream() -> None:
    text = (
        UPSTREAM
        + "routes:\n  - path: /a\n    upstream: api\n    auth: none\n  - path: /b\n    upstream: apj\n    auth: none\n"
    )

    issue = issue_at(issues_of(text), "routes[1].upstream")

    assert "'apj' is not defined" in issue.message
    assert "(defined: api)" in issue.message


def test_route_upstream_none_defined() -> None:
    issue = issue_at(
        issues_of("routes:\n  - path: /a\n    upstream: api\n    auth: none\n"),
        "routes[0].upstream",
    )

    assert "none defined" in issue.message


def test_route_upstream_missing_key() -> None:
    issue = issue_at(issues_of(UPSTREAM + "routes:\n  - path: /a\n"), "routes[0].upstream")

    assert "required" in issue.message.lower()


def test_errors_reported_together() -> None:
    text = (
        UPSTREAM
        + "server:\n  listn: 127.0.0.1:80\nroutes:\n  - path: /\n    upstream: nope\n    auth: none\n"
    )

    issues = issues_of(text)

    assert "server.listn" in paths_of(issues)
    assert "routes[0].upstream" in paths_of(issues)


def test_error_message_lists_issues() -> None:
    text = (
        UPSTREAM
        + "server:\n  listn: 127.0.0.1:80\nroutes:\n  - path: /\n    upstream: nope\n    auth: none\n"
    )

    with pytest.raises(ConfigError) as caught:
        parse_config(text, {})

    lines = str(caught.value).splitlines()
    assert len(lines) == len(caught.value.issues)
    assert any(line.startswith("server.listn: unknown key") for line in lines)
    assert any(line.startswith("routes[0].upstream: upstream") for line in lines)


def test_bad_value_truncated() -> None:
    issue = issue_at(issues_of("logging:\n  level: " + "x" * 300 + "\n"), "logging.level")

    got = issue.message.split("(got ", 1)[1]
    assert got.endswith("...)")
    assert len(got) == len("'" + "x" * 79) + len("...)")


def test_bad_value_shown() -> None:
    issue = issue_at(issues_of("server:\n  listen: nowhere\n"), "server.listen")

    assert issue.message.startswith("expected HOST:PORT")
    assert "(got 'nowhere')" in issue.message


def test_env_substitution_nested() -> None:
    text = """\
server:
  listen: "${HOST}:${PORT}"
upstreams:
  api:
    targets: ["http://${BACKEND}:9000"]
routes:
  - path: /${PREFIX}
    upstream: api
    auth: none
"""
    environ = {"HOST": "0.0.0.0", "PORT": "8081", "BACKEND": "10.1.2.3", "PREFIX": "v1"}

    config = parse_config(text, environ)

    assert config.server.listen == ("0.0.0.0", 8081)
    assert config.upstreams["api"].targets[0].host == "10.1.2.3"
    assert config.routes[0].path == "/v1"


@pytest.mark.parametrize(
    ("reference", "environ", "name"),
    [
        ("n-${NAME}", {"NAME": "/var/log/a"}, "n-/var/log/a"),
        ("n-${NAME:-stdout}", {}, "n-stdout"),
        ("n-${NAME:-stdout}", {"NAME": "/var/log/a"}, "n-/var/log/a"),
        ("n-${NAME:-stdout}", {"NAME": ""}, "n-stdout"),
        ("n-${NAME:-}", {}, "n-"),
        ("n-${NAME}", {"NAME": ""}, "n-"),
        ("/var/${DIR:-log}/${NAME:-ringwall}.log", {"NAME": "gw"}, "/var/log/gw.log"),
        ("$NAME", {"NAME": "/x"}, "$NAME"),
    ],
)
def test_env_substitution_forms(reference: str, environ: dict[str, str], name: str) -> None:
    text = (
        "upstreams:\n  api:\n    targets: [http://127.0.0.1:9000]\n"
        f'routes:\n  - name: "{reference}"\n    path: /\n    upstream: api\n    auth: none\n'
    )
    config = parse_config(text, environ)

    assert config.routes[0].name == name


@pytest.mark.parametrize(("value", "expected"), [("4", 4), ("auto", "auto")])
def test_env_whole_value_typed(value: str, expected: object) -> None:
    config = parse_config("server:\n  workers: ${WORKERS}\n", {"WORKERS": value})

    assert config.server.workers == expected


def test_log_destination_unwritable(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "access.log"
    text = f'logging:\n  access:\n    destination: "{missing}"\n'

    issue = issue_at(issues_of(text), "logging.access.destination")

    assert "cannot append" in issue.message


def test_env_missing_names_path() -> None:
    text = 'upstreams:\n  api:\n    targets:\n      - "http://${BACKEND}:9000"\n'

    issue = issue_at(issues_of(text), "upstreams.api.targets[0]")

    assert "environment variable BACKEND is not set" in issue.message
    assert "${BACKEND:-DEFAULT}" in issue.message


def test_env_missing_in_route_list() -> None:
    text = (
        UPSTREAM
        + "routes:\n  - path: /a\n    upstream: api\n    auth: none\n    hosts: [a.com, '${HOST}']\n"
    )

    issues = issues_of(text)

    assert "routes[0].hosts[1]" in paths_of(issues)


def test_env_missing_with_other_errors() -> None:
    text = "logging:\n  destination: ${OUT}\n  levl: info\n"

    issues = issues_of(text)

    assert "logging.destination" in paths_of(issues)
    assert "logging.levl" in paths_of(issues)


def test_env_value_not_reexpanded() -> None:
    config = parse_config("logging:\n  destination: ${A}\n", {"A": "${B}"})

    assert config.logging.destination == "${B}"


def test_env_keys_not_substituted() -> None:
    issues = issues_of("${SECTION}: {}\n", {"SECTION": "server"})

    assert "${SECTION}" in paths_of(issues)


@pytest.mark.parametrize(
    "text",
    [
        "server: {}\nserver: {}\n",
        "server:\n  workers: 2\n  workers: 4\n",
        UPSTREAM + "  api:\n    targets: [http://127.0.0.1:9001]\n",
    ],
)
def test_duplicate_key_rejected(text: str) -> None:
    issues = issues_of(text)

    assert len(issues) == 1
    assert "duplicate key" in issues[0].message


def test_duplicate_key_line() -> None:
    issues = issues_of("server:\n  workers: 2\n  workers: 4\n")

    assert issues[0].path == "line 3, column 3"
    assert "'workers'" in issues[0].message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("server:\n  listen: [a\n", 3),
        ("server:\n  workers: 2\n bad: 1\n", 3),
        ("logging:\n\tlevel: info\n", 2),
    ],
)
def test_invalid_yaml_line(text: str, line: int) -> None:
    issues = issues_of(text)

    assert len(issues) == 1
    assert issues[0].path.startswith(f"line {line}, column ")
    assert issues[0].message.startswith("invalid YAML: ")


def test_unsafe_yaml_tag_rejected() -> None:
    issues = issues_of("logging:\n  destination: !!python/object/apply:os.getcwd []\n")

    assert issues[0].message.startswith("invalid YAML: ")


@pytest.mark.parametrize("text", ["- server\n", "just text\n", "42\n"])
def test_top_level_not_mapping(text: str) -> None:
    issues = issues_of(text)

    assert issues == [ConfigIssue("", "expected a mapping of sections at the top level")]


def test_union_error_path() -> None:
    issues = issues_of("server:\n  workers: many\n")

    assert set(paths_of(issues)) == {"server.workers"}


def test_duplicate_route_name_path() -> None:
    text = UPSTREAM + "routes:\n  - {path: /a, upstream: api, auth: none, name: x}\n"
    text += "  - {path: /b, upstream: api, auth: none, name: x}\n"

    issues = issues_of(text)

    assert paths_of(issues) == ["routes[1].name"]


def decompress_route(setting: str) -> str:
    return (
        UPSTREAM
        + f"routes:\n  - path: /a\n    upstream: api\n    auth: none\n    decompress: {setting}\n"
    )


def test_decompress_defaults() -> None:
    [route] = parse_config(decompress_route("{}"), {}).routes

    assert route.decompress is not None
    assert route.decompress.encodings == ("gzip", "deflate")
    assert route.decompress.max_ratio == 100
    assert route.decompress.max_bytes is None


def test_decompress_settings_normalized() -> None:
    text = decompress_route("{encodings: [GZIP, gzip], max_ratio: 20, max_bytes: 4MiB}")
    [route] = parse_config(text, {}).routes

    assert route.decompress is not None
    assert route.decompress.encodings == ("gzip",)
    assert route.decompress.max_ratio == 20
    assert route.decompress.max_bytes == 4 * 1024 * 1024


@pytest.mark.parametrize(
    ("setting", "path", "message"),
    [
        (
            "{encodings: [gzip, br]}",
            "routes[0].decompress.encodings",
            "unsupported content coding 'br': expected gzip or deflate",
        ),
        ("{encodings: []}", "routes[0].decompress.encodings", "expected a list of content codings"),
        ("{max_ratio: 0}", "routes[0].decompress.max_ratio", "expected a value >= 1"),
        ("{max_ratio: true}", "routes[0].decompress.max_ratio", "expected an integer"),
        ("{max_bytes: 0}", "routes[0].decompress.max_bytes", "expected a value >= 1"),
        ("{max_bytes: lots}", "routes[0].decompress.max_bytes", "expected a size in bytes"),
        ("{ratio: 10}", "routes[0].decompress.ratio", "unknown key 'ratio'"),
        ("true", "routes[0].decompress", "expected a mapping"),
    ],
)
def test_decompress_invalid(setting: str, path: str, message: str) -> None:
    issue = issue_at(issues_of(decompress_route(setting)), path)

    assert message in issue.message
