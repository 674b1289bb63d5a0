"""Network namespaces for tests: the drill's own helpers (`firmware.drill.netns`)."""

from firmware.drill.netns import inside, namespace, run

__all__ = ["inside", "namespace", "run"]
