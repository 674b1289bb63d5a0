"""`make_provider`: the provider named in the config, opened fail-closed.

``create=False`` is the normal case: the database already holds wrapped keys, so a
missing KEK is an error (`KeyMaterialError`) rather than a reason to make a new one,
which would orphan every stored card. The caller passes ``create=True`` only when the
database holds no wrapped keys yet. The "systemd-creds" provider never creates.
"""

from __future__ import annotations

from pathlib import Path

from payments_cache.errors import KeyProviderError
from payments_cache.keyproviders.base import KeyProvider
from payments_cache.keyproviders.file import FileKeyProvider
from payments_cache.keyproviders.systemd_creds import SystemdCredsKeyProvider

KINDS = ("file", "pkcs11", "systemd-creds")
DEFAULT_FILE_NAME = "kek.key"
DEFAULT_KEY_LABEL = "storebox-kek"
DEFAULT_CREDENTIAL_NAME = "storebox-kek"


def make_provider(kind: str, *, state_dir: str | Path,
                  file_path: str | Path | None = None,
                  pkcs11_module: str | None = None,
                  pkcs11_token_label: str | None = None,
                  pkcs11_pin_file: str | Path | None = None,
                  pkcs11_key_label: str | None = None,
                  credential_name: str | None = None,
                  credentials_directory: str | Path | None = None,
                  create: bool) -> KeyProvider:
    """Open the `kind` provider; `KeyMaterialError` when its KEK is missing or unusable."""
    if kind == "file":
        return FileKeyProvider(file_path or Path(state_dir) / DEFAULT_FILE_NAME, create=create)
    if kind == "pkcs11":
        return _pkcs11(pkcs11_module, pkcs11_token_label, pkcs11_pin_file,
                       pkcs11_key_label or DEFAULT_KEY_LABEL, create)
    if kind == "systemd-creds":
        return SystemdCredsKeyProvider(credential_name or DEFAULT_CREDENTIAL_NAME,
                                       credentials_directory=credentials_directory)
    raise KeyProviderError(kind, f"unknown key provider {kind!r}; expected one of {KINDS!r}")


def _pkcs11(module: str | None, token_label: str | None, pin_file: str | Path | None,
            key_label: str, create: bool) -> KeyProvider:
    # imported here: a box on the file or systemd-creds provider needs no PKCS#11 binding
    from payments_cache.keyproviders.pkcs11 import Pkcs11KeyProvider

    missing = [name for name, value in (("pkcs11_module", module),
                                        ("pkcs11_token_label", token_label),
                                        ("pkcs11_pin_file", pin_file)) if not value]
    if missing or module is None or token_label is None or pin_file is None:
        raise KeyProviderError("pkcs11", f"missing settings {missing!r}")
    return Pkcs11KeyProvider(module, token_label, pin_file, key_label, create=create)
