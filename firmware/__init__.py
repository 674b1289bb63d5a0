"""storebox firmware: composition root, configuration, CLI, status API and fleet agent."""

from importlib import metadata

try:
    __version__ = metadata.version("storebox")
except metadata.PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+src"
