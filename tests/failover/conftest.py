"""The shop in namespaces (`lab.shop`) as fixtures for the failover tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from lab.shop import (
    GATEWAY_IP,
    LAN_BOX,
    LAN_CLIENT,
    LTE_ADDR,
    LTE_ADDR6,
    LTE_GW,
    LTE_GW6,
    OTHER_IP,
    PORT,
    WIRED_ADDR,
    WIRED_ADDR6,
    WIRED_GW,
    WIRED_GW6,
    EchoServer,
    Shop,
    build_shop,
    connect,
    ipn,
    route_dev,
    seen_source,
    sh,
    sysctl,
)
from tests.failover.netlab import Pki, make_pki

__all__ = [
    "GATEWAY_IP", "LAN_BOX", "LAN_CLIENT", "LTE_ADDR", "LTE_ADDR6", "LTE_GW", "LTE_GW6",
    "OTHER_IP", "PORT", "WIRED_ADDR", "WIRED_ADDR6", "WIRED_GW", "WIRED_GW6", "EchoServer",
    "Shop", "build_shop", "connect", "ipn", "route_dev", "seen_source", "sh", "sysctl",
]


@pytest.fixture
def shop() -> Iterator[Shop]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CI runs as root)")
    with build_shop() as s:
        yield s


@pytest.fixture
def shop6() -> Iterator[Shop]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CI runs as root)")
    with build_shop(ipv6=True) as s:
        yield s


@pytest.fixture(scope="module")
def pki() -> Pki:
    """A throw-away CA and server certificate for the HTTPS probe tests (netlab)."""
    return make_pki()
