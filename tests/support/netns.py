"""Network namespaces for tests: the drill's own helpers (`lab.netns`)."""

from lab.netns import inside, namespace, run

__all__ = ["inside", "namespace", "run"]
