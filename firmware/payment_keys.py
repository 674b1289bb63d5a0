"""The payments side's secrets as the config names them: key provider, seal key, merchant key.

* `provider_factory` opens the configured key provider (`payments.key_provider`) for
  the store, which decides whether it may create a KEK;
* `legacy_kek` is the KEK file an earlier firmware left in the state directory: when
  another provider is configured the store re-wraps its keys and erases it;
* `protection_plan` decides how cards are kept: sealed to the gateway when the seal key
  reads, else locally — unless a seal key was asked for and only a key on disk is
  left to fall back on: then no card is kept and offline payments are declined
  `cannot_protect_card` (a fault, until SIGHUP brings the key back);
* `MerchantGateway` is the gateway client whose merchant key SIGHUP re-reads, so a box
  installed without its key forwards once the key is put in place, without a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from firmware.config import Config
from payments_cache.errors import GatewayUnavailable, SealKeyError
from payments_cache.gateway import AuthorizationPayload, Gateway
from payments_cache.gateway_client import HttpGateway
from payments_cache.keyproviders import KeyProvider, make_provider
from payments_cache.models import GatewayResult
from payments_cache.sealing import SealKey

log = logging.getLogger("storebox.payments")


def kek_path(config: Config) -> Path:
    return Path(config.payments.kek_file or Path(config.device.state_dir) / "kek")


def provider_factory(config: Config) -> Callable[[bool], KeyProvider]:
    p = config.payments

    def open_provider(create: bool) -> KeyProvider:
        return make_provider(
            p.key_provider, state_dir=config.device.state_dir, file_path=kek_path(config),
            pkcs11_module=p.pkcs11_module, pkcs11_token_label=p.pkcs11_token_label,
            pkcs11_pin_file=p.pkcs11_pin_file, pkcs11_key_label=p.pkcs11_key_label,
            credential_name=p.systemd_credential, create=create)
    return open_provider


def legacy_kek(config: Config) -> Path | None:
    """The old KEK file to migrate away from (None when the file provider uses it)."""
    return None if config.payments.key_provider == "file" else kek_path(config)


@dataclass(frozen=True)
class ProtectionPlan:
    """How cards are kept, and the faults that come with it."""

    seal_key: SealKey | None
    local_allowed: bool
    faults: dict[str, str] = field(default_factory=dict)  # code -> message

    @property
    def mode(self) -> str:
        if self.seal_key is not None:
            return "sealed"
        return "local" if self.local_allowed else "none"


def protection_plan(config: Config, provider_protects: bool) -> ProtectionPlan:
    path = config.payments.seal_key_file
    faults: dict[str, str] = {}
    if not provider_protects:
        faults["keys_on_disk"] = ("the \"file\" key provider keeps the key-encryption key on "
                                  "the box's disk: development only")
    if not path:
        return ProtectionPlan(None, True, faults)
    try:
        return ProtectionPlan(SealKey.load(path), True, faults)
    except SealKeyError as exc:
        if provider_protects:
            faults["seal_key_unreadable"] = (f"{exc}; cards are encrypted on the box "
                                             "instead until it is fixed (SIGHUP)")
            return ProtectionPlan(None, True, faults)
        faults["cannot_protect_card"] = (f"{exc}, and the only local key is on disk: "
                                         "offline payments are declined until it is fixed "
                                         "(SIGHUP)")
        return ProtectionPlan(None, False, faults)


def read_merchant_key(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        log.error("cannot read payments.merchant_key_file %r: %s; every payment stands in "
                  "until it is configured", path, exc.strerror)
        return ""


class NoCredentials:
    """The gateway as seen without a merchant key: unreachable, so the box stands in."""

    def __init__(self, path: str) -> None:
        self.reason = f"no merchant key in {path!r}"

    async def authorize(self, payload: AuthorizationPayload, timeout_s: float) -> GatewayResult:
        raise GatewayUnavailable(payload.payment_id, self.reason)

    async def lookup(self, payment_id: str, timeout_s: float) -> GatewayResult | None:
        raise GatewayUnavailable(payment_id, self.reason)


class MerchantGateway:
    """The gateway with the merchant key read from its file, again on every `reload`."""

    def __init__(self, url: str, key_file: str) -> None:
        self.url = url
        self.key_file = key_file
        self._key = ""
        self._current: Gateway = NoCredentials(key_file)
        self._http: HttpGateway | None = None
        self._retired: list[HttpGateway] = []
        self.reload()

    @property
    def has_key(self) -> bool:
        return bool(self._key)

    def reload(self) -> bool:
        """Re-read the key file; True when the key changed (old client closed later)."""
        key = read_merchant_key(self.key_file)
        if key == self._key:
            return False
        self._key = key
        if self._http is not None:
            self._retired.append(self._http)  # requests in flight finish on it
        self._http = HttpGateway(self.url, key) if key else None
        self._current = self._http or NoCredentials(self.key_file)
        return True

    async def authorize(self, payload: AuthorizationPayload, timeout_s: float) -> GatewayResult:
        return await self._current.authorize(payload, timeout_s)

    async def lookup(self, payment_id: str, timeout_s: float) -> GatewayResult | None:
        return await self._current.lookup(payment_id, timeout_s)

    async def close(self) -> None:
        for client in [*self._retired, *([self._http] if self._http else [])]:
            await client.close()
