"""The WAF engines of a process, one per distinct policy, loaded once.

Loading rules into libmodsecurity is not thread-safe, so the supervisor
loads every policy of the configuration before it forks the workers
(`preload`), and workers reuse those engines. A policy first seen on a
reload is loaded in the worker, between requests on its event loop.
"""

from __future__ import annotations

from ringwall.config.model import Config
from ringwall.config.waf import WafConfig
from ringwall.edge.waf.engine import WafEngine

_engines: dict[WafConfig, WafEngine] = {}


def policies(config: Config) -> set[WafConfig]:
    """Return the enabled WAF policies of `config`: the default and each route's."""
    found = {route.waf or config.waf for route in config.routes} | {config.waf}
    return {policy for policy in found if policy is not None and policy.enabled}


def preload(config: Config) -> None:
    """Load every policy of `config` that is not loaded yet; raises WafLoadError."""
    for policy in policies(config):
        engine_for(policy)


def engine_for(policy: WafConfig) -> WafEngine:
    engine = _engines.get(policy)
    if engine is None:
        engine = WafEngine.load(policy)
        _engines[policy] = engine
    return engine
