"""Key providers: where the KEK that wraps the database's data and HMAC keys lives.

``file`` (development: a 0600 file, no protection at rest), ``pkcs11`` (a non-extractable
key in a token) and ``systemd-creds`` (a TPM-sealed systemd credential). See `base`.
The PKCS#11 provider is imported lazily by `make_provider`, so that a box without the
binding can still use the others.
"""

from __future__ import annotations

from payments_cache.keyproviders.base import KeyProvider
from payments_cache.keyproviders.factory import KINDS, make_provider
from payments_cache.keyproviders.file import FileKeyProvider
from payments_cache.keyproviders.systemd_creds import SystemdCredsKeyProvider

__all__ = ["KINDS", "FileKeyProvider", "KeyProvider", "SystemdCredsKeyProvider",
           "make_provider"]
