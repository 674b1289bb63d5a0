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


@pytest.fixture(autouse=True)
def documented_interfaces(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Hold what the box answers against its documentation in docs/.

    The CLI's API client (`storebox status --json`, `queue`, `keys` run in-process) and the
    daemon fixture's (`tests.support.daemon`) check every answer against
    docs/openapi.json; the other hooks (`pinned_session`, the MQTT `Operator`) are in
    tests/support. A violation raised inside a callback may be swallowed by the code
    around it, so every one recorded during the test fails it here."""
    import firmware.cli.main
    import tests.support.daemon
    from tests.support.openapi import checked_get_json
    from tests.support.schemas import take_violations

    take_violations()
    monkeypatch.setattr(firmware.cli.main, "get_json", checked_get_json)
    monkeypatch.setattr(tests.support.daemon, "get_json", checked_get_json, raising=False)
    yield
    found = take_violations()
    if found:
        pytest.fail("output that docs/ does not document:\n" + "\n".join(found),
                    pytrace=False)
