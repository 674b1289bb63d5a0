"""Configuration: a typed schema for every section of docs/config.md, loaded from TOML."""

from firmware.config.loader import DEFAULT_PATH, load_config, load_config_text
from firmware.config.schema import Config

__all__ = ["DEFAULT_PATH", "Config", "load_config", "load_config_text"]
