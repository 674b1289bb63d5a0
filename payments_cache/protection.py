"""How the box keeps a card it may still have to forward: sealed, or encrypted here.

Two forms, chosen by whether the gateway gave the box a seal key
(`payments.seal_key_file`, docs/gateway-protocol.md):

* **sealed** — HPKE to the gateway's X25519 public key at the moment the payment is
  accepted (`payments_cache.sealing`). The box keeps no key that opens it: a stolen box
  yields nothing. The sealed card's associated data is the payment id (the contract);
  the rest of the row it belongs to (amount, currency, merchant, terminal, creation
  time) is bound by a keyed MAC (`row_mac`), so an edited row is quarantined, never
  forwarded;
* **local** — AES-256-GCM under the store's data key (`crypto.KeyRing`), whose
  associated data binds the same row fields. Only as safe as the key provider that
  wraps the data key.

`CardProtection.protect` makes the stored form; `for_forwarding` turns a stored row back
into what the forwarder sends (a `Card` without CVC, or the `SealedCard` as stored),
raising `RecordQuarantined` when the row does not authenticate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from payments_cache.crypto import (
    KeyRing,
    RecordBinding,
    blob_key_id,
    card_from_plaintext,
    card_plaintext,
)
from payments_cache.errors import PaymentsError, RecordQuarantined
from payments_cache.models import Card
from payments_cache.sealing import SealedCard, SealKey, seal_card

CARD_FIELD = "card"
_ROW_MAC_DOMAIN = "sealed-card-row"

#: What the forwarder sends for a card: the card itself (local form) or the sealed one.
ForwardCard = Card | SealedCard


@dataclass(frozen=True)
class ProtectedCard:
    """The stored form of one card: the columns the store writes."""

    card_blob: bytes | None = None
    key_id: str | None = None
    card_sealed: bytes | None = None
    seal_kid: str | None = None
    row_mac: str | None = None


@dataclass(frozen=True)
class StoredCard:
    """The card columns of one row as read back."""

    card_blob: bytes | None
    key_id: str | None
    card_sealed: bytes | None
    seal_kid: str | None
    row_mac: str | None


class CardProtection:
    """Protects cards with the seal key when there is one, else with the key ring."""

    def __init__(self, ring: KeyRing, seal_key: SealKey | None = None) -> None:
        self._ring = ring
        self.seal_key = seal_key
        #: False when local encryption is not good enough (a seal key was asked for but
        #: cannot be read, and the only local key sits on disk): no card is kept at all.
        self.local_allowed = True

    @property
    def mode(self) -> Literal["sealed", "local", "none"]:
        if self.seal_key is not None:
            return "sealed"
        return "local" if self.local_allowed else "none"

    def protect(self, binding: RecordBinding, card: Card) -> ProtectedCard:
        """The stored form of `card` for the row `binding` describes (never the CVC);
        nothing at all in mode "none"."""
        if self.mode == "none":
            return ProtectedCard()
        if self.seal_key is not None:
            sealed = seal_card(self.seal_key, binding.payment_id, card).to_blob()
            return ProtectedCard(card_sealed=sealed, seal_kid=self.seal_key.kid,
                                 row_mac=self.row_mac(binding, sealed))
        return ProtectedCard(
            card_blob=self._ring.encrypt(binding, CARD_FIELD, card_plaintext(card)),
            key_id=self._ring.active_data_key_id)

    def row_mac(self, binding: RecordBinding, sealed: bytes, key_id: str | None = None) -> str:
        """The MAC binding a sealed card to its row (under `key_id`, default the active)."""
        return self._ring.mac(_ROW_MAC_DOMAIN, _row_bytes(binding, sealed), key_id)

    def for_forwarding(self, binding: RecordBinding, stored: StoredCard) -> ForwardCard:
        """What the forwarder sends; `RecordQuarantined` when the row does not authenticate."""
        if stored.card_sealed is not None:
            return self._sealed(binding, stored)
        if stored.card_blob is None:
            raise RecordQuarantined(binding.payment_id, CARD_FIELD, "no card stored")
        return self.open_local(binding, stored.card_blob, stored.key_id)

    def open_local(self, binding: RecordBinding, blob: bytes, key_id: str | None) -> Card:
        if blob_key_id(blob) != key_id:
            raise RecordQuarantined(binding.payment_id, CARD_FIELD,
                                    "key id does not match the record")
        return card_from_plaintext(binding.payment_id,
                                   self._ring.decrypt(binding, CARD_FIELD, blob))

    def _sealed(self, binding: RecordBinding, stored: StoredCard) -> SealedCard:
        assert stored.card_sealed is not None
        pid = binding.payment_id
        if not self._ring.verify_mac(_ROW_MAC_DOMAIN, _row_bytes(binding, stored.card_sealed),
                                     stored.row_mac):
            raise RecordQuarantined(pid, CARD_FIELD, "row does not match its sealed card "
                                    "(amount, currency, merchant, terminal or time altered)")
        try:
            sealed = SealedCard.from_blob(stored.card_sealed)
        except PaymentsError as exc:
            raise RecordQuarantined(pid, CARD_FIELD, "malformed sealed card") from exc
        if sealed.kid != stored.seal_kid:
            raise RecordQuarantined(pid, CARD_FIELD, "seal key id does not match the record")
        return sealed


def _row_bytes(binding: RecordBinding, sealed: bytes) -> bytes:
    return binding.encode() + len(sealed).to_bytes(4, "big") + sealed
