"""Configuration: typed models and the YAML loader."""

from ringwall.config.load import load_config, parse_config
from ringwall.config.model import Config, Route, Upstream

__all__ = ["Config", "Route", "Upstream", "load_config", "parse_config"]
