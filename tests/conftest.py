from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.netns import namespace


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CI runs as root)")
    with namespace() as name:
        yield name
