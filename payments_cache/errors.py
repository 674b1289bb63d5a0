"""The one exception base of `payments_cache`; every error carries the fields it is about."""

from __future__ import annotations


class PaymentsError(Exception):
    """Base of every error raised by `payments_cache`."""


class InvalidRequest(PaymentsError):
    """A POS request failed validation; maps to 400 with `code`, `field` and `message`."""

    def __init__(self, code: str, field: str | None, message: str) -> None:
        self.code = code
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


class StorageUnavailable(PaymentsError):
    """The store could not durably commit (disk full, I/O error); maps to 503."""

    def __init__(self, operation: str, reason: str) -> None:
        self.operation = operation
        self.reason = reason
        super().__init__(f"cannot {operation}: {reason}")


class RecordQuarantined(PaymentsError):
    """A stored ciphertext failed authentication (tampered, or a wrong key)."""

    def __init__(self, payment_id: str, field: str, reason: str) -> None:
        self.payment_id = payment_id
        self.field = field
        self.reason = reason
        super().__init__(f"payment {payment_id!r} field {field!r} quarantined: {reason}")


class KeyMaterialError(PaymentsError):
    """Key material is missing, unreadable, has unsafe permissions or does not fit."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"key file {path!r}: {reason}")


class GatewayError(PaymentsError):
    """Base of the errors talking to the upstream gateway (docs/gateway-protocol.md)."""


class GatewayUnavailable(GatewayError):
    """Transient: connection refused, 5xx, 409 in progress or 429; retry later.

    The request is known *not* to have been processed (or to be safely replayable
    under the same Idempotency-Key). `retry_after_s` comes from Retry-After.
    """

    def __init__(self, payment_id: str, reason: str, retry_after_s: float | None = None,
                 status: int | None = None) -> None:
        self.payment_id = payment_id
        self.reason = reason
        self.retry_after_s = retry_after_s
        self.status = status
        super().__init__(f"gateway unavailable for {payment_id!r}: {reason}")


class UnknownOutcome(GatewayError):
    """The request may have reached the gateway but its answer was lost (timeout, reset)."""

    def __init__(self, payment_id: str, reason: str, timed_out: bool = False,
                 malformed: bool = False) -> None:
        self.payment_id = payment_id
        self.reason = reason
        self.timed_out = timed_out  # no answer within the deadline (a blackhole looks so)
        #: The gateway answered, but with something that is not a result: not the network.
        self.malformed = malformed
        super().__init__(f"outcome unknown for {payment_id!r}: {reason}")


class GatewayRejected(GatewayError):
    """Permanent: a 4xx other than 409/429 (e.g. 400, 422); the payment goes to `dead`."""

    def __init__(self, payment_id: str, status: int, reason: str) -> None:
        self.payment_id = payment_id
        self.status = status
        self.reason = reason
        super().__init__(f"gateway rejected {payment_id!r} with {status}: {reason}")


class PaymentNotFound(PaymentsError):
    """No stored payment has this id."""

    def __init__(self, payment_id: str) -> None:
        self.payment_id = payment_id
        super().__init__(f"no payment {payment_id!r}")


class DuplicatePayment(PaymentsError):
    """A payment under this Idempotency-Key is already stored; maps to 409 or a replay."""

    def __init__(self, idempotency_key: str) -> None:
        self.idempotency_key = idempotency_key
        super().__init__(f"a payment with idempotency key {idempotency_key!r} already exists")


class InvalidTransition(PaymentsError):
    """The payment is not in a state that allows `operation` (e.g. settling a settled one)."""

    def __init__(self, payment_id: str, operation: str, status: str, forward_state: str) -> None:
        self.payment_id = payment_id
        self.operation = operation
        self.status = status
        self.forward_state = forward_state
        super().__init__(f"cannot {operation} payment {payment_id!r}: status {status!r}, "
                         f"forward state {forward_state!r}")


class MigrationFailed(PaymentsError):
    """A schema migration failed and was rolled back; the database is as it was before it."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"migration {name!r} failed: {reason}")


class KeyProviderError(KeyMaterialError):
    """The key provider (file, PKCS#11 token, systemd credential) cannot give or use a KEK.

    A subclass of `KeyMaterialError` so that every caller that already fails closed on
    bad key material does so for a provider too; `path` holds the provider's name.
    """

    def __init__(self, provider: str, reason: str) -> None:
        self.provider = provider
        self.path = provider
        self.reason = reason
        PaymentsError.__init__(self, f"key provider {provider!r}: {reason}")


class SealKeyError(PaymentsError):
    """A seal key file (docs/gateway-protocol.md) is missing, unreadable, not PEM or not X25519."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"seal key file {path!r}: {reason}")


class SealedCardError(PaymentsError):
    """A sealed card cannot be parsed or opened; `reason` is a stable code
    (``unknown_kid``, ``authentication_failed``, ``malformed``, ``bad_plaintext``),
    `detail` a sentence for people. Neither ever holds card data."""

    def __init__(self, kid: str | None, reason: str, detail: str | None = None) -> None:
        self.kid = kid
        self.reason = reason
        self.detail = detail
        message = f"sealed card (kid {kid!r}): {reason}"
        super().__init__(f"{message}: {detail}" if detail else message)
