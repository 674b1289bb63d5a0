from tests.conftest import netns

__all__ = ["netns"]
