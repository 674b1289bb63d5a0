"""A simulator of the upstream card gateway (docs/gateway-protocol.md), with fault injection.

Used by the tests, the benchmarks and `make run`. Everything lives in memory; it is
plain asyncio + aiohttp and never logs a card number.

Gateway endpoints (every one needs ``Authorization: Bearer <merchant key>`` except
``/health``):

- ``POST /v1/authorizations`` — header ``Idempotency-Key`` required and equal to the
  body's ``payment_id``. 200 ``{"payment_id", "status", "auth_code", "decline_code"}``.
  The same key with the same body replays the stored result; with a different body
  it is refused with 422; while the first request under the key is still being
  processed a repeat gets 409 (with ``Retry-After: 1``). Bad input: 400; wrong or
  missing key: 401. "The same body" means equal JSON (key order does not matter).
  An offline authorization may carry ``card_sealed`` (docs/gateway-protocol.md) instead of ``card``,
  with an optional ``card_hint`` ``{"brand", "last4"}``; see "Sealed cards" below.
- ``GET /v1/authorizations/{payment_id}`` — the stored result (200), 409 while the
  first request is still being processed, 404 when it was never received.
- ``GET /health`` — 200 ``{"status": "ok"}``.

Decision rule (deterministic; see `DeclineRules`), checked in this order:

1. the PAN fails the Luhn check → declined ``invalid_card`` (``check_luhn``);
2. the card expired before the end of its expiry month, judged against
   ``captured_at`` → declined ``expired_card`` (``check_expiry``);
3. the PAN is in ``decline_pans`` → declined ``card_declined``;
4. the amount is in ``decline_amounts`` → declined ``insufficient_funds``;
5. otherwise approved with a random 6-character auth code (``[A-Z0-9]``).

Sealed cards (docs/gateway-protocol.md). The simulator holds the gateway's X25519 private keys
(``seal_private_keys``/``seal_opener``, ``--seal-private-key``) and opens ``card_sealed``
with the payment id as aad, then applies the decision rule to the opened card. Exactly
one of ``card``/``card_sealed`` (else 400); ``card_sealed`` on an online request, or not of
the form ``{"kid", "enc", "ct"}`` (base64url, no padding): 400. A well-formed one that
cannot be used: 422 with code ``unknown_kid`` (no private key with that kid),
``authentication_failed`` (another payment id or key, altered bytes), ``bad_plaintext``
(it opened but is not a valid card) or ``card_hint_mismatch`` (the hint's last4/brand
are not the opened card's). These are checked before the idempotency check, so they
store nothing; `SimStats.card_refused_422` counts them. The fingerprint is the body's
JSON: the same sealed bytes replay, while a fresh seal of the same card under the same
key is a different body (422 conflict), so the box must resend the bytes it stored.

Fault injection (`Faults`, settable at construction, through `set_faults` and through
``POST /_sim/faults``). All randomness comes from one `random.Random(seed)`. The gateway
endpoints see, in this order:

- ``down``: every request answered 503 (``down_mode="503"``) or the listening socket
  closed so that connections are refused (``down_mode="refuse"``; requests still
  arriving on kept-alive connections are reset);
- one draw: with probability ``fail_429`` → 429 with ``Retry-After: retry_after_s``
  (seconds, or an HTTP-date with ``retry_after_http_date``); else with probability
  ``fail_5xx`` → ``fail_5xx_status`` (default 503). Nothing is processed;
- then authentication and validation (401/400);
- latency ``latency_s + uniform(0, jitter_s)``: the time a request spends being
  processed. For a new authorization the key is *in progress* (a repeat gets 409)
  for that whole time, and the result is stored at its end;
- with probability ``drop_answers`` (authorizations answered 200 only, new or replayed):
  the result is stored and then the connection is reset with no answer — the "lost
  answer" case.

Admin endpoints (never faulted, no authentication: bind the simulator to loopback):
``GET /_sim/stats``, ``GET|POST|DELETE /_sim/faults`` (POST merges the given fields,
DELETE clears every fault), ``GET|POST /_sim/rules``, ``GET /_sim/authorizations``
(stored records, no PAN), ``POST /_sim/reset`` (forget every authorization and counter).
With ``admin_port``/``--admin-listen`` they get a listener of their own, which keeps
working while the gateway listener refuses connections.

Exactly-once accounting: one stored result per key by construction (the check and the
in-progress mark happen without an ``await`` in between). `stats` counts, per payment and
in total, the authorizations *processed* (a new result stored) and *replayed*, the 422
conflicts, the 409s, the dropped answers and the injected 5xx/429s.

Standalone::

    python -m lab.gateway_sim --listen 127.0.0.1:8443 --merchant-key-file F \\
        [--admin-listen HOST:PORT] [--seed N] [--latency S] [--jitter S] [--fail-5xx F] \\
        [--fail-5xx-status N] [--fail-429 F] [--retry-after S] [--retry-after-http-date] \\
        [--drop-answers F] [--down 503|refuse] [--decline-amount N ...] \\
        [--decline-pan PAN ...] [--no-luhn] [--no-expiry-check] [--seal-private-key PATH ...]
        [--log-level LEVEL]

It prints ``gateway_sim listening on http://HOST:PORT`` (plus `` admin http://…`` with a
separate admin listener) once it accepts connections, and exits 0 on SIGTERM/SIGINT.
"""

from __future__ import annotations

from lab.gateway_sim.cli import main
from lab.gateway_sim.faults import Faults
from lab.gateway_sim.ledger import PaymentCounters, SimStats, StoredAuthorization
from lab.gateway_sim.rules import DeclineRules
from lab.gateway_sim.server import GatewaySimulator

__all__ = [
    "DeclineRules",
    "Faults",
    "GatewaySimulator",
    "PaymentCounters",
    "SimStats",
    "StoredAuthorization",
    "main",
]
