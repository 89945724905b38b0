"""Render the nginx and ModSecurity config templates in bench/nginx/."""

from __future__ import annotations

import re
from pathlib import Path

TEMPLATE_DIR = Path(__file__).resolve().parent / "nginx"
MODSECURITY_MODULE = Path("/usr/lib/nginx/modules/ngx_http_modsecurity_module.so")
# Debian's libnginx-mod-http-modsecurity installs the mapping file here.
UNICODE_MAPPING = Path("/etc/nginx/unicode.mapping")
CRS_SETUP = Path("/etc/modsecurity/crs/crs-setup.conf")
CRS_RULES_DIR = Path("/usr/share/modsecurity-crs/rules")
CRS_EXCLUSIONS_BEFORE = Path("/etc/modsecurity/crs/REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf")
CRS_EXCLUSIONS_AFTER = Path("/etc/modsecurity/crs/RESPONSE-999-EXCLUSION-RULES-AFTER-CRS.conf")

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


class MissingFileError(FileNotFoundError):
    """Raised when a file that a system needs is not installed."""


def render_template(name: str, values: dict[str, str]) -> str:
    """Return the template bench/nginx/`name` with each {{key}} replaced by values[key]."""
    text = (TEMPLATE_DIR / name).read_text()
    used = set(_PLACEHOLDER.findall(text))
    missing = used - values.keys()
    if missing:
        raise KeyError(f"template {name} needs values for: {', '.join(sorted(missing))}")
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], text)


def write_backend_conf(prefix: Path, port: int) -> Path:
    values = {"prefix": str(prefix), "port": str(port)}
    return _write(prefix / "backend.conf", render_template("backend.conf", values))


def write_proxy_conf(
    prefix: Path,
    name: str,
    port: int,
    backend_port: int,
    modsecurity_rules: Path | None,
    tls_directives: str = "",
) -> Path:
    """Write the nginx reverse-proxy config, with ModSecurity when `modsecurity_rules` is set.

    With `tls_directives` (the ssl_* lines), the server listens for HTTPS only.
    """
    load_modules = ""
    modsecurity = ""
    if modsecurity_rules is not None:
        load_modules = f"load_module {MODSECURITY_MODULE};"
        modsecurity = (
            f"        modsecurity on;\n        modsecurity_rules_file {modsecurity_rules};"
        )
    values = {
        "prefix": str(prefix),
        "name": name,
        "port": str(port),
        "backend_port": str(backend_port),
        "load_modules": load_modules,
        "modsecurity": modsecurity,
        "listen_options": " ssl" if tls_directives else "",
        "tls": tls_directives,
    }
    return _write(prefix / f"{name}.conf", render_template("proxy.conf", values))


def write_modsecurity_rules(prefix: Path) -> Path:
    """Write the ModSecurity main rules file that loads OWASP CRS.

    Raises MissingFileError when the module, the mapping file or the CRS is not installed.
    """
    for required in (MODSECURITY_MODULE, UNICODE_MAPPING, CRS_SETUP, CRS_RULES_DIR):
        if not required.exists():
            raise MissingFileError(
                f"{required} not found. Install modsecurity-crs and "
                "libnginx-mod-http-modsecurity (make setup)."
            )
    for directory in ("modsecurity-tmp", "modsecurity-data"):
        (prefix / directory).mkdir(exist_ok=True)

    values = {
        "prefix": str(prefix),
        "unicode_mapping": str(UNICODE_MAPPING),
        "crs_setup": str(CRS_SETUP),
        "crs_includes": "\n".join(f"Include {path}" for path in crs_rule_files()),
    }
    return _write(prefix / "modsecurity.conf", render_template("modsecurity.conf", values))


def crs_rule_files() -> list[Path]:
    """Return the CRS files to include, in the order that Debian's owasp-crs.load uses."""
    rules = sorted(CRS_RULES_DIR.glob("*.conf"))
    before = [CRS_EXCLUSIONS_BEFORE] if CRS_EXCLUSIONS_BEFORE.exists() else []
    after = [CRS_EXCLUSIONS_AFTER] if CRS_EXCLUSIONS_AFTER.exists() else []
    return before + rules + after


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
