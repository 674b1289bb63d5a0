"""Key providers: one contract for "file", "pkcs11" (a real SoftHSM2 token) and
"systemd-creds" (a credentials directory as systemd lays it out), then each one's own
failure modes."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pkcs11
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pkcs11.constants import Attribute, ObjectClass
from pkcs11.exceptions import AttributeSensitive, PKCS11Error
from pkcs11.mechanisms import KeyType

from payments_cache.crypto import _wrap_aad, load_or_create_kek
from payments_cache.errors import KeyMaterialError, KeyProviderError
from payments_cache.keyproviders import KeyProvider, make_provider
from payments_cache.keyproviders import blob as blobfmt
from payments_cache.keyproviders.file import FileKeyProvider
from tests.support.softhsm import SoftHsm, softhsm, write_pin_file

RAW = bytes(range(32))
CRED = "storebox-kek"


# --- one harness per provider ----------------------------------------------------------


class Harness:
    """Opens one kind of provider and plays the operator where the provider cannot act."""

    kind = ""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.opened: list[KeyProvider] = []

    def open(self, *, create: bool) -> KeyProvider:
        provider = self._make(create)
        self.opened.append(provider)
        return provider

    def _make(self, create: bool) -> KeyProvider:
        raise NotImplementedError

    def rotate(self, provider: KeyProvider) -> tuple[KeyProvider, str]:
        return provider, provider.rotate_kek()

    def retire(self, provider: KeyProvider, kek_id: str) -> KeyProvider:
        provider.retire_kek(kek_id)
        return provider

    def secrets(self) -> list[str]:
        """Strings that must never appear in `describe()`."""
        return []

    def nothing_created(self) -> bool:
        return True

    def close_all(self) -> None:
        for provider in self.opened:
            provider.close()


class FileHarness(Harness):
    kind = "file"

    @property
    def path(self) -> Path:
        return self.tmp / "state" / "kek.key"

    def _make(self, create: bool) -> KeyProvider:
        return make_provider("file", state_dir=self.tmp / "state", create=create)

    def secrets(self) -> list[str]:
        keys = [p.read_bytes() for p in self.path.parent.glob("kek.key*")]
        return [s for k in keys for s in (k.hex(), base64.b64encode(k).decode())]

    def nothing_created(self) -> bool:
        return not self.path.parent.exists() or not any(self.path.parent.iterdir())


class Pkcs11Harness(Harness):
    kind = "pkcs11"

    def __init__(self, tmp: Path, hsm: SoftHsm) -> None:
        super().__init__(tmp)
        self.hsm = hsm

    def _make(self, create: bool) -> KeyProvider:
        return open_pkcs11(self.hsm, create=create)

    def secrets(self) -> list[str]:
        return [self.hsm.pin]

    def nothing_created(self) -> bool:
        return secret_key_labels(self.hsm) == []


class SystemdHarness(Harness):
    """The provider cannot create, rotate or retire: here the test plays the operator who
    provisions credentials (writes them where systemd would decrypt them) and restarts."""

    kind = "systemd-creds"

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.creds = tmp / "credentials"
        self.creds.mkdir(mode=0o700)

    def _make(self, create: bool) -> KeyProvider:
        if create and not (self.creds / CRED).exists():
            provision(self.creds, CRED)  # the operator did `systemd-creds encrypt` first
        return make_provider("systemd-creds", state_dir=self.tmp, credential_name=CRED,
                             credentials_directory=self.creds, create=create)

    def rotate(self, provider: KeyProvider) -> tuple[KeyProvider, str]:
        with pytest.raises(KeyProviderError, match="storebox-kek-2"):
            provider.rotate_kek()
        provision(self.creds, f"{CRED}-2")
        provider.close()
        return self.open(create=False), f"systemd-creds:{CRED}-2"

    def retire(self, provider: KeyProvider, kek_id: str) -> KeyProvider:
        name = kek_id.removeprefix("systemd-creds:")
        with pytest.raises(KeyProviderError, match="LoadCredentialEncrypted"):
            provider.retire_kek(kek_id)
        (self.creds / name).unlink()
        provider.close()
        return self.open(create=False)

    def secrets(self) -> list[str]:
        keys = [p.read_bytes() for p in self.creds.iterdir()]
        return [s for k in keys for s in (k.hex(), base64.b64encode(k).decode())]


def provision(directory: Path, name: str, data: bytes | None = None, mode: int = 0o400) -> Path:
    """A credential as systemd lays it out in $CREDENTIALS_DIRECTORY (read-only, owner only)."""
    path = directory / name
    path.write_bytes(secrets.token_bytes(32) if data is None else data)
    path.chmod(mode)
    return path


def secret_key_labels(hsm: SoftHsm) -> list[str]:
    token = pkcs11.lib(hsm.module).get_token(token_label=hsm.token_label)
    with token.open(user_pin=hsm.pin) as session:
        found = session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY})
        return sorted(str(obj[Attribute.LABEL]) for obj in found)


@pytest.fixture
def hsm(tmp_path: Path) -> Iterator[SoftHsm]:
    with softhsm(tmp_path / "hsm") as token:
        yield token


@pytest.fixture(params=["file", "pkcs11", "systemd-creds"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    made: Harness
    if request.param == "pkcs11":
        with softhsm(tmp_path / "hsm") as token:  # closes the providers it tracked
            yield Pkcs11Harness(tmp_path, token)
        return
    made = FileHarness(tmp_path) if request.param == "file" else SystemdHarness(tmp_path)
    yield made
    made.close_all()


# --- the contract ----------------------------------------------------------------------


def test_round_trip_names_the_current_kek(harness: Harness) -> None:
    provider = harness.open(create=True)
    assert isinstance(provider, KeyProvider)
    assert provider.name == harness.kind
    assert provider.protects_at_rest is (harness.kind != "file")
    wrapped = provider.wrap("dk_1", "data", RAW)
    assert RAW not in wrapped
    assert provider.wrapped_kek_id(wrapped) == provider.current_kek_id()
    assert provider.current_kek_id().startswith(harness.kind + ":")
    assert provider.unwrap("dk_1", "data", wrapped) == RAW
    assert provider.wrap("dk_1", "data", RAW) != wrapped  # a fresh IV every time


def test_the_kek_persists_across_a_restart(harness: Harness) -> None:
    first = harness.open(create=True)
    wrapped = first.wrap("hk_1", "hmac", RAW)
    kek_id = first.current_kek_id()
    first.close()
    again = harness.open(create=False)
    assert again.current_kek_id() == kek_id
    assert again.unwrap("hk_1", "hmac", wrapped) == RAW


@pytest.mark.parametrize(("key_id", "purpose"), [("dk_2", "data"), ("dk_1", "hmac")])
def test_associated_data_binds_key_id_and_purpose(harness: Harness, key_id: str,
                                                  purpose: str) -> None:
    provider = harness.open(create=True)
    wrapped = provider.wrap("dk_1", "data", RAW)
    with pytest.raises(KeyMaterialError, match="wrong KEK or altered"):
        provider.unwrap(key_id, purpose, wrapped)


def test_every_altered_byte_fails(harness: Harness) -> None:
    provider = harness.open(create=True)
    wrapped = provider.wrap("dk_1", "data", RAW)
    for index in range(len(wrapped)):
        altered = bytearray(wrapped)
        altered[index] ^= 0x01
        with pytest.raises(KeyMaterialError):
            provider.unwrap("dk_1", "data", bytes(altered))
    with pytest.raises(KeyMaterialError, match="malformed"):
        provider.unwrap("dk_1", "data", wrapped[:-1])


def test_a_blob_relabelled_to_another_kek_fails(harness: Harness) -> None:
    provider = harness.open(create=True)
    old = provider.wrap("dk_1", "data", RAW)
    provider, new_id = harness.rotate(provider)
    parsed = blobfmt.parse(old)
    assert parsed is not None
    relabelled = blobfmt.encode(new_id, parsed.iv, parsed.body)
    with pytest.raises(KeyMaterialError, match="wrong KEK or altered"):
        provider.unwrap("dk_1", "data", relabelled)


def test_an_unknown_kek_is_named(harness: Harness) -> None:
    provider = harness.open(create=True)
    parsed = blobfmt.parse(provider.wrap("dk_1", "data", RAW))
    assert parsed is not None
    foreign = blobfmt.encode(f"{harness.kind}:elsewhere-9", parsed.iv, parsed.body)
    with pytest.raises(KeyMaterialError, match="elsewhere-9"):
        provider.unwrap("dk_1", "data", foreign)


def test_rotation_keeps_old_blobs_and_wraps_under_the_new_kek(harness: Harness) -> None:
    provider = harness.open(create=True)
    old_id = provider.current_kek_id()
    old = provider.wrap("dk_1", "data", RAW)
    provider, new_id = harness.rotate(provider)
    assert new_id != old_id
    assert provider.current_kek_id() == new_id
    new = provider.wrap("dk_2", "data", RAW[::-1])
    assert provider.wrapped_kek_id(new) == new_id
    assert provider.wrapped_kek_id(old) == old_id
    assert provider.unwrap("dk_1", "data", old) == RAW
    assert provider.unwrap("dk_2", "data", new) == RAW[::-1]
    assert provider.describe()["current_kek_id"] == new_id
    provider.close()
    again = harness.open(create=False)
    assert again.current_kek_id() == new_id
    assert again.unwrap("dk_1", "data", old) == RAW


def test_retiring_a_kek_makes_its_blobs_fail(harness: Harness) -> None:
    provider = harness.open(create=True)
    old_id = provider.current_kek_id()
    old = provider.wrap("dk_1", "data", RAW)
    provider, new_id = harness.rotate(provider)
    new = provider.wrap("dk_2", "data", RAW)
    provider = harness.retire(provider, old_id)
    with pytest.raises(KeyMaterialError, match="not"):
        provider.unwrap("dk_1", "data", old)
    assert provider.unwrap("dk_2", "data", new) == RAW
    with pytest.raises(KeyProviderError, match="current"):
        provider.retire_kek(new_id)
    provider.close()
    again = harness.open(create=False)
    with pytest.raises(KeyMaterialError):
        again.unwrap("dk_1", "data", old)


def test_missing_kek_fails_closed(harness: Harness) -> None:
    with pytest.raises(KeyMaterialError, match=r"missing|no KEK"):
        harness.open(create=False)
    assert harness.nothing_created()


def test_describe_holds_no_secret(harness: Harness) -> None:
    provider = harness.open(create=True)
    provider, _ = harness.rotate(provider)
    described = provider.describe()
    text = json.dumps(described)
    assert described["name"] == harness.kind
    assert described["protects_at_rest"] is provider.protects_at_rest
    assert described["current_kek_id"] == provider.current_kek_id()
    assert harness.secrets()
    for secret in harness.secrets():
        assert secret not in text


def test_only_32_byte_keys_are_wrapped(harness: Harness) -> None:
    provider = harness.open(create=True)
    with pytest.raises(ValueError, match="31 bytes"):
        provider.wrap("dk_1", "data", RAW[:31])


# --- file ------------------------------------------------------------------------------


def test_file_legacy_blobs_from_todays_kek_unwrap(tmp_path: Path) -> None:
    path = tmp_path / "kek.key"
    legacy = load_or_create_kek(path).wrap("dk_old", "data", RAW)
    provider = FileKeyProvider(path, create=False)
    assert provider.wrapped_kek_id(legacy) is None
    assert provider.unwrap("dk_old", "data", legacy) == RAW
    assert provider.legacy_unwrap("dk_old", "data", legacy) == RAW
    with pytest.raises(KeyMaterialError, match="wrong KEK or altered"):
        provider.unwrap("dk_other", "data", legacy)
    provider.rotate_kek()
    assert provider.unwrap("dk_old", "data", legacy) == RAW
    provider.retire_kek("file:1")
    with pytest.raises(KeyProviderError, match="legacy KEK"):
        provider.unwrap("dk_old", "data", legacy)


def test_file_rotation_adds_a_file_and_retirement_removes_it(tmp_path: Path) -> None:
    path = tmp_path / "state" / "kek.key"
    provider = FileKeyProvider(path, create=True)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert provider.rotate_kek() == "file:2"
    second = path.with_name("kek.key.2")
    assert (second.stat().st_mode & 0o777) == 0o600
    assert second.read_bytes() != path.read_bytes()
    provider.retire_kek("file:1")
    assert not path.exists()
    assert provider.current_kek_id() == "file:2"
    assert FileKeyProvider(path, create=False).current_kek_id() == "file:2"
    assert not path.exists()  # create=False never brought generation 1 back


def test_file_refuses_a_group_readable_kek(tmp_path: Path) -> None:
    path = tmp_path / "kek.key"
    FileKeyProvider(path, create=True).close()
    path.chmod(0o640)
    with pytest.raises(KeyMaterialError, match="0640"):
        FileKeyProvider(path, create=False)


def test_other_providers_name_legacy_blobs(tmp_path: Path) -> None:
    legacy = load_or_create_kek(tmp_path / "kek.key").wrap("dk_old", "data", RAW)
    creds = tmp_path / "creds"
    creds.mkdir()
    provision(creds, CRED)
    provider = make_provider("systemd-creds", state_dir=tmp_path, credential_name=CRED,
                             credentials_directory=creds, create=False)
    with pytest.raises(KeyProviderError, match="legacy"):
        provider.unwrap("dk_old", "data", legacy)


def test_the_kek_id_is_part_of_the_associated_data() -> None:
    assert blobfmt.aad("file:1", "dk_1", "data") != blobfmt.aad("file:2", "dk_1", "data")
    assert blobfmt.aad("a", "bc", "data") != blobfmt.aad("ab", "c", "data")


def test_a_legacy_blob_whose_nonce_starts_like_a_header_is_still_legacy(
        tmp_path: Path) -> None:
    """1 legacy blob in 2**32 has a random nonce that starts with the magic."""
    path = tmp_path / "kek.key"
    load_or_create_kek(path)
    nonce = blobfmt.MAGIC + secrets.token_bytes(8)
    legacy = nonce + AESGCM(path.read_bytes()).encrypt(nonce, RAW,
                                                       _wrap_aad("dk_old", "data"))
    provider = FileKeyProvider(path, create=False)
    assert provider.wrapped_kek_id(legacy) is None
    assert provider.unwrap("dk_old", "data", legacy) == RAW


def test_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyProviderError, match="'tpm'"):
        make_provider("tpm", state_dir=tmp_path, create=True)


# --- pkcs11 on SoftHSM2 ----------------------------------------------------------------


def open_pkcs11(hsm: SoftHsm, *, pin_file: Path | None = None, token_label: str | None = None,
                create: bool = True) -> KeyProvider:
    provider = make_provider("pkcs11", state_dir=hsm.conf.parent, pkcs11_module=hsm.module,
                         pkcs11_token_label=token_label or hsm.token_label,
                         pkcs11_pin_file=pin_file or hsm.pin_file,
                         pkcs11_key_label="storebox-kek", create=create)
    hsm.track(provider)
    return provider


def test_pkcs11_kek_never_leaves_the_token(hsm: SoftHsm) -> None:
    open_pkcs11(hsm).close()
    token = pkcs11.lib(hsm.module).get_token(token_label=hsm.token_label)
    with token.open(rw=True, user_pin=hsm.pin) as session:
        kek = session.get_key(ObjectClass.SECRET_KEY, KeyType.AES, label="storebox-kek-1")
        assert kek[Attribute.EXTRACTABLE] is False
        assert kek[Attribute.SENSITIVE] is True
        assert kek[Attribute.TOKEN] is True
        with pytest.raises(AttributeSensitive):
            kek[Attribute.VALUE]  # C_GetAttributeValue(CKA_VALUE)
        wrapper = session.generate_key(KeyType.AES, 256, label="attacker",
                                       template={Attribute.WRAP: True})
        with pytest.raises(PKCS11Error):  # C_WrapKey: CKR_KEY_UNEXTRACTABLE
            wrapper.wrap_key(kek)  # type: ignore[attr-defined]


def test_pkcs11_two_providers_in_one_process_share_the_login(hsm: SoftHsm) -> None:
    first = open_pkcs11(hsm)
    second = open_pkcs11(hsm, create=False)
    try:
        wrapped = first.wrap("dk_1", "data", RAW)
        assert second.unwrap("dk_1", "data", wrapped) == RAW
        assert first.rotate_kek() == "pkcs11:storebox-kek-2"
        rotated = first.wrap("dk_2", "data", RAW)
        assert second.unwrap("dk_2", "data", rotated) == RAW  # finds the new KEK
    finally:
        first.close()
    assert second.unwrap("dk_1", "data", wrapped) == RAW  # still logged in
    with pytest.raises(KeyProviderError, match="closed"):
        first.wrap("dk_3", "data", RAW)
    second.close()


def test_pkcs11_wrong_pin_is_a_clear_error(hsm: SoftHsm, tmp_path: Path) -> None:
    wrong = write_pin_file(tmp_path / "wrong-pin", "not-the-pin")
    with pytest.raises(KeyProviderError, match="wrong PIN") as caught:
        open_pkcs11(hsm, pin_file=wrong)
    assert "not-the-pin" not in str(caught.value)


def test_pkcs11_refuses_a_readable_pin_file(hsm: SoftHsm, tmp_path: Path) -> None:
    loose = write_pin_file(tmp_path / "loose-pin", hsm.pin, mode=0o644)
    with pytest.raises(KeyProviderError, match="0644"):
        open_pkcs11(hsm, pin_file=loose)


def test_pkcs11_unknown_token_is_named(hsm: SoftHsm) -> None:
    with pytest.raises(KeyProviderError, match="'no-such-token'"):
        open_pkcs11(hsm, token_label="no-such-token")


def test_pkcs11_refuses_an_extractable_kek(hsm: SoftHsm) -> None:
    token = pkcs11.lib(hsm.module).get_token(token_label=hsm.token_label)
    with token.open(rw=True, user_pin=hsm.pin) as session:
        session.generate_key(KeyType.AES, 256, label="storebox-kek-1", store=True,
                             template={Attribute.EXTRACTABLE: True,
                                       Attribute.SENSITIVE: False})
    with pytest.raises(KeyProviderError, match="must never leave the token"):
        open_pkcs11(hsm, create=False)


def test_pkcs11_refuses_two_keks_with_one_label(hsm: SoftHsm) -> None:
    token = pkcs11.lib(hsm.module).get_token(token_label=hsm.token_label)
    with token.open(rw=True, user_pin=hsm.pin) as session:
        for _ in range(2):
            session.generate_key(KeyType.AES, 256, label="storebox-kek-1", store=True,
                                 template={Attribute.EXTRACTABLE: False,
                                           Attribute.SENSITIVE: True})
    with pytest.raises(KeyProviderError, match="two KEKs labelled 'storebox-kek-1'"):
        open_pkcs11(hsm, create=False)


def test_pkcs11_another_boxs_token_cannot_unwrap(hsm: SoftHsm) -> None:
    provider = open_pkcs11(hsm)
    wrapped = provider.wrap("dk_1", "data", RAW)
    provider.close()
    hsm.init_token("other-box", "other-pin")
    other_pin = write_pin_file(hsm.conf.parent / "other-pin", "other-pin")
    other = open_pkcs11(hsm, token_label="other-box", pin_file=other_pin)
    try:
        assert other.current_kek_id() == "pkcs11:storebox-kek-1"  # same label, other key
        with pytest.raises(KeyMaterialError, match="wrong KEK or altered"):
            other.unwrap("dk_1", "data", wrapped)
        described = other.describe()
        assert described["token_label"] == "other-box"
        assert described["token_manufacturer"] == "SoftHSM project"
    finally:
        other.close()


def test_softhsm_leaves_the_host_token_directory_alone(tmp_path: Path) -> None:
    host = Path("/var/lib/softhsm/tokens")
    before = sorted(os.listdir(host)) if host.is_dir() else None
    with softhsm(tmp_path / "hsm") as token:
        open_pkcs11(token).close()
        assert len(list((tmp_path / "hsm" / "tokens").iterdir())) == 1
    after = sorted(os.listdir(host)) if host.is_dir() else None
    assert before == after


# --- systemd-creds ---------------------------------------------------------------------


def test_systemd_without_credentials_directory_names_the_unit_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(KeyMaterialError, match="CREDENTIALS_DIRECTORY") as caught:
        make_provider("systemd-creds", state_dir=tmp_path, credential_name=CRED, create=True)
    assert ("LoadCredentialEncrypted=storebox-kek:/etc/credstore.encrypted/storebox-kek"
            in str(caught.value))


def test_systemd_reads_credentials_directory_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    provision(tmp_path, CRED)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    provider = make_provider("systemd-creds", state_dir=tmp_path, credential_name=CRED,
                             create=False)
    assert provider.current_kek_id() == "systemd-creds:storebox-kek"


def test_systemd_missing_credential_names_the_unit_line(tmp_path: Path) -> None:
    with pytest.raises(KeyMaterialError, match="LoadCredentialEncrypted=storebox-kek:"):
        make_provider("systemd-creds", state_dir=tmp_path, credential_name=CRED,
                      credentials_directory=tmp_path, create=True)
    assert list(tmp_path.iterdir()) == []  # create=True does not make one either


@pytest.mark.parametrize(("data", "mode", "match"), [
    (base64.b64encode(bytes(32)), 0o400, "44 bytes.*not base64"),
    (bytes(33), 0o400, "33 bytes"),
    (bytes(31), 0o400, "31 bytes"),
    (bytes(32), 0o440, "0440"),
], ids=["base64", "too-long", "too-short", "group-readable"])
def test_systemd_refuses_a_bad_credential(tmp_path: Path, data: bytes, mode: int,
                                          match: str) -> None:
    provision(tmp_path, CRED, data, mode)
    with pytest.raises(KeyProviderError, match=match):
        make_provider("systemd-creds", state_dir=tmp_path, credential_name=CRED,
                      credentials_directory=tmp_path, create=False)


def test_systemd_creds_encrypt_then_decrypt_feeds_the_provider(tmp_path: Path) -> None:
    """The real tool: `systemd-creds encrypt --with-key=host` under a private host secret
    (``$SYSTEMD_CREDENTIAL_SECRET``; the Pi uses --with-key=tpm2), then `decrypt` as
    systemd does at service start, into the directory the provider reads."""
    env = {**os.environ, "SYSTEMD_CREDENTIAL_SECRET": str(tmp_path / "credential.secret")}
    kek = secrets.token_bytes(32)
    sealed = tmp_path / "credstore" / CRED
    sealed.parent.mkdir()
    subprocess.run(["systemd-creds", "encrypt", "--with-key=host", f"--name={CRED}", "-",
                    str(sealed)], input=kek, env=env, check=True, capture_output=True)
    assert kek not in sealed.read_bytes()
    creds = tmp_path / "run-credentials"
    creds.mkdir(mode=0o700)
    subprocess.run(["systemd-creds", "decrypt", f"--name={CRED}", str(sealed),
                    str(creds / CRED)], env=env, check=True, capture_output=True)
    (creds / CRED).chmod(0o400)
    assert (creds / CRED).read_bytes() == kek
    provider = make_provider("systemd-creds", state_dir=tmp_path, credential_name=CRED,
                             credentials_directory=creds, create=False)
    wrapped = provider.wrap("dk_1", "data", RAW)
    assert provider.unwrap("dk_1", "data", wrapped) == RAW
    other_host = {**env, "SYSTEMD_CREDENTIAL_SECRET": str(tmp_path / "other.secret")}
    stolen = subprocess.run(["systemd-creds", "decrypt", f"--name={CRED}", str(sealed), "-"],
                            env=other_host, capture_output=True)
    assert stolen.returncode != 0  # the sealed file alone (a stolen card) does not open
