"""The development CA and certificates that the demo configuration reads, made once per run."""

import datetime
import tempfile
from functools import cache
from pathlib import Path

from ringwall.certs_cli import ensure_dev_certificates


@cache
def demo_certs_dir() -> Path:
    """Return a directory with `ringwall certs dev` output, for DEMO_CERTS_DIR."""
    directory = Path(tempfile.mkdtemp(prefix="ringwall-demo-certs-")) / "certs"
    ensure_dev_certificates(directory, datetime.datetime.now(datetime.UTC))
    return directory
