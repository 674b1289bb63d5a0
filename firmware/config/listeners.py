"""Which API listeners serve HTTPS, and the `[api]` rules that involve several keys.

Pure functions of the config (and of name resolution for `is_loopback`), so the config
loader can apply them without importing the TLS machinery (`firmware.tls`).
"""

from __future__ import annotations

import ipaddress
import socket

from firmware.config.schema import ApiConfig

__all__ = ["api_problems", "is_loopback", "wants_tls"]


def is_loopback(host: str) -> bool:
    """Whether a listen host only ever binds loopback addresses."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(i[4][0]).split("%")[0]).is_loopback
                               for i in infos)


def wants_tls(mode: str, host: str) -> bool:
    """Whether a listener on `host` serves HTTPS under `api.tls = mode`."""
    if mode == "on":
        return True
    if mode == "off":
        return False
    return not is_loopback(host)


def api_problems(api: ApiConfig) -> list[tuple[str, str]]:
    """Rules that involve more than one `[api]` key, as (key, message) like cross_checks."""
    problems: list[tuple[str, str]] = []
    host = api.listen.rpartition(":")[0]
    if bool(api.tls_cert_file) != bool(api.tls_key_file):
        key = "api.tls_key_file" if api.tls_cert_file else "api.tls_cert_file"
        problems.append((key, "api.tls_cert_file and api.tls_key_file go together"))
    if api.tls == "off" and not is_loopback(host) and not api.allow_plain_http:
        problems.append(("api.tls", f"\"off\" would serve card data in plain HTTP on "
                                    f"{api.listen}, beyond loopback: set "
                                    f"api.allow_plain_http = true to mean it"))
    if api.client_ca_file and not wants_tls(api.tls, host):
        problems.append(("api.client_ca_file", "needs HTTPS on api.listen (client "
                                               "certificates are part of the TLS handshake)"))
    return problems
