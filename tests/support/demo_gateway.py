"""The shipped demo configuration served by an in-process gateway, with its backend and issuer."""

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ringwall.config import Config, load_config
from ringwall.demo.backend import DemoBackend
from ringwall.demo.idp import DemoIdentityProvider
from ringwall.demo.issuer import DemoIssuer, create_admin_token, load_or_create_issuer
from ringwall.demo.runner import DEMO_CONFIG, GATEWAY_KEY_FILE
from ringwall.gateway.auth.api_keys import ApiKeyStore
from ringwall.gateway.upstream_token import create_signing_key
from tests.support.backend_thread import running_backend
from tests.support.demo_certs import demo_certs_dir
from tests.support.gateway_thread import GatewayThread, running_gateway
from tests.support.loop_thread import running_loop


@dataclass
class Demo:
    gateway: GatewayThread
    backend: DemoBackend
    issuer: DemoIssuer
    certs: Path


@contextmanager
def running_demo(
    tmp_path: Path,
    *,
    serve_tls: bool = False,
    adjust: Callable[[Config], Config] | None = None,
    api_keys: ApiKeyStore | None = None,
) -> Iterator[Demo]:
    """Yield the demo gateway, backend and issuer, with the demo state in `tmp_path`/state.

    `adjust` may change the loaded config. `api_keys`, if given, is saved as the
    demo's API key file before the config is loaded.
    """
    state = tmp_path / "state"
    create_signing_key(state / GATEWAY_KEY_FILE)
    create_admin_token(state)
    issuer = load_or_create_issuer(state)
    if api_keys is not None:
        api_keys.save(state / "api-keys.json")
    certs = demo_certs_dir()
    with running_backend() as backend, running_loop("demo-idp") as loop_thread:
        idp = DemoIdentityProvider(state)
        loop_thread.run(idp.start())
        environ = {
            **os.environ,
            "DEMO_BACKEND_URL": f"http://127.0.0.1:{backend.port}",
            "DEMO_IDP_URL": f"http://127.0.0.1:{idp.port}",
            "DEMO_STATE_DIR": str(state),
            "DEMO_CERTS_DIR": str(certs),
        }
        config = load_config(DEMO_CONFIG, environ)
        if adjust is not None:
            config = adjust(config)
        try:
            with running_gateway(config, tmp_path, serve_tls) as gateway:
                yield Demo(gateway, backend, issuer, certs)
        finally:
            loop_thread.run(idp.stop())


def without_limits(config: Config) -> Config:
    """Return `config` without rate limits and bans.

    Hundreds of requests from one address and one user would trip the demo's
    limits and its ban rule, and their 429 and 403 would hide what the test checks.
    """
    routes = tuple(route.model_copy(update={"limits": ()}) for route in config.routes)
    limits = config.limits.model_copy(update={"bans": ()})
    return config.model_copy(update={"limits": limits, "routes": routes})
