"""The "systemd-creds" provider: the KEK is a systemd credential sealed by the TPM.

On the box the unit carries::

    LoadCredentialEncrypted=storebox-kek:/etc/credstore.encrypted/storebox-kek

and the file was made once with::

    head -c 32 /dev/urandom | systemd-creds encrypt --with-key=tpm2 --name=storebox-kek \\
        - /etc/credstore.encrypted/storebox-kek

What rests on the SD card is useless without the box's TPM. At start systemd decrypts
it into ``$CREDENTIALS_DIRECTORY/storebox-kek`` (a ramfs only the service can read);
this provider reads it from there. The credential is the **raw 32 bytes** (not base64);
any other size is refused.

The service cannot mint or destroy credentials (they are made with the TPM by an
operator and the unit file lists them), so rotation is done by provisioning: add a
credential named ``<name>-2`` (then ``-3``...) next to the first one and restart. The
current KEK is the highest-numbered credential present; ``rotate_kek`` and
``retire_kek`` raise `KeyProviderError` saying exactly that.
"""

from __future__ import annotations

import os
from pathlib import Path

from payments_cache.errors import KeyProviderError
from payments_cache.keyproviders import blob
from payments_cache.keyproviders.secret_file import read_secret_file
from payments_cache.keyproviders.software import SoftwareKeks

NAME = "systemd-creds"
ENV = "CREDENTIALS_DIRECTORY"
CREDSTORE = "/etc/credstore.encrypted"


class SystemdCredsKeyProvider:
    """KEKs from ``$CREDENTIALS_DIRECTORY/<name>`` and ``<name>-<n>`` (n >= 2)."""

    name = NAME
    protects_at_rest = True

    def __init__(self, credential_name: str, *,
                 credentials_directory: str | Path | None = None) -> None:
        self.credential_name = _check_name(credential_name)
        self.directory = _directory(credential_name, credentials_directory)
        self._keks = SoftwareKeks(NAME)
        generations = self._generations()
        if not generations:
            raise KeyProviderError(NAME, f"credential {credential_name!r} is missing from "
                                   f"{str(self.directory)!r}; add to the unit: "
                                   f"{unit_line(credential_name)}")
        for generation in generations:
            self._keks.add(self._kek_id(generation), _read(self._file(generation)))
        self._current = max(generations)

    def current_kek_id(self) -> str:
        return self._kek_id(self._current)

    def wrap(self, key_id: str, purpose: str, raw: bytes) -> bytes:
        return self._keks.wrap(self.current_kek_id(), key_id, purpose, raw)

    def unwrap(self, key_id: str, purpose: str, wrapped: bytes) -> bytes:
        return self._keks.unwrap(key_id, purpose, wrapped)

    def wrapped_kek_id(self, wrapped: bytes) -> str | None:
        parsed = blob.parse(wrapped)
        return parsed.kek_id if parsed else None

    def rotate_kek(self) -> str:
        nxt = self._credential(self._current + 1)
        raise KeyProviderError(NAME, "the service cannot create a credential; provision "
                               f"{nxt!r}: `head -c 32 /dev/urandom | systemd-creds encrypt "
                               f"--with-key=tpm2 --name={nxt} - {CREDSTORE}/{nxt}`, add "
                               f"`{unit_line(nxt)}` to storebox.service and restart; it "
                               "becomes the current KEK and the store re-wraps its keys")

    def retire_kek(self, kek_id: str) -> None:
        if kek_id == self.current_kek_id():
            raise KeyProviderError(NAME, f"KEK {kek_id!r} is current; it cannot be retired")
        name = kek_id.removeprefix(f"{NAME}:")
        raise KeyProviderError(NAME, f"the service cannot destroy credential {name!r}: remove "
                               f"`{unit_line(name)}` from storebox.service, delete "
                               f"{CREDSTORE}/{name} and restart")

    def describe(self) -> dict[str, object]:
        return {"name": NAME, "protects_at_rest": True,
                "current_kek_id": self.current_kek_id(), "kek_ids": self._keks.ids(),
                "credential_name": self.credential_name,
                "credentials_directory": str(self.directory)}

    def close(self) -> None:
        self._keks.clear()

    def _kek_id(self, generation: int) -> str:
        return f"{NAME}:{self._credential(generation)}"

    def _credential(self, generation: int) -> str:
        return self.credential_name if generation == 1 else f"{self.credential_name}-{generation}"

    def _file(self, generation: int) -> Path:
        return self.directory / self._credential(generation)

    def _generations(self) -> list[int]:
        found = [1] if self._file(1).exists() else []
        prefix = self.credential_name + "-"
        for entry in self.directory.iterdir():
            suffix = entry.name[len(prefix):]
            if entry.name.startswith(prefix) and suffix.isdigit() and int(suffix) > 1:
                found.append(int(suffix))
        return sorted(found)


def unit_line(credential_name: str) -> str:
    return f"LoadCredentialEncrypted={credential_name}:{CREDSTORE}/{credential_name}"


def _check_name(name: str) -> str:
    if not name or "/" in name or name in (".", "..") or not name.isprintable():
        raise KeyProviderError(NAME, f"credential name {name!r} is not a file name")
    return name


def _directory(name: str, given: str | Path | None) -> Path:
    value = str(given) if given is not None else os.environ.get(ENV)
    if not value:
        raise KeyProviderError(NAME, f"${ENV} is not set: the service was not started by "
                               f"systemd with its credential; add to the unit: {unit_line(name)}")
    directory = Path(value)
    if not directory.is_dir():
        raise KeyProviderError(NAME, f"${ENV} {value!r} is not a directory")
    return directory


def _read(path: Path) -> bytes:
    """The raw 32-byte KEK; refuses symlinks, group/other access and any other size."""
    data, st = read_secret_file(path, NAME, "credential", blob.RAW_KEY_BYTES + 1)
    if st.st_size != blob.RAW_KEY_BYTES:
        raise KeyProviderError(NAME, f"credential {str(path)!r} holds {st.st_size} bytes; "
                               f"expected exactly {blob.RAW_KEY_BYTES} raw bytes "
                               "(not base64)")
    if len(data) != blob.RAW_KEY_BYTES:
        raise KeyProviderError(NAME, f"credential {str(path)!r}: read {len(data)} bytes, "
                               f"expected {blob.RAW_KEY_BYTES}")
    return data
