"""One logged-in PKCS#11 session per token per process, shared by provider instances.

PKCS#11 login state belongs to the application, not to a session: a second ``C_Login``
fails with CKR_USER_ALREADY_LOGGED_IN, and python-pkcs11's ``Session.close`` calls
``C_Logout``, which would log out every other session of the process. So the store and
(say) a status command in the same process share one session here, counted by users;
the last `release` logs out and closes it. A later user must present the same PIN.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from dataclasses import dataclass, field

from pkcs11.exceptions import PinIncorrect, PinLenRange, PinLocked, PKCS11Error
from pkcs11.types import Session, Token

from payments_cache.errors import KeyProviderError

NAME = "pkcs11"


@dataclass
class SharedSession:
    """A session and the lock that serialises operations on it (sessions are not
    thread-safe)."""

    session: Session
    pin_digest: bytes
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0


_sessions: dict[tuple[str, str], SharedSession] = {}
_sessions_lock = threading.Lock()


def acquire(module: str, token: Token, pin: str) -> SharedSession:
    """The process's session on `token`, logging in with `pin` when there is none yet."""
    key = (module, token.label)
    digest = hashlib.sha256(pin.encode()).digest()
    with _sessions_lock:
        shared = _sessions.get(key)
        if shared is None:
            shared = SharedSession(_login(token, pin), digest)
            _sessions[key] = shared
        elif not hmac.compare_digest(shared.pin_digest, digest):
            raise KeyProviderError(NAME, f"wrong PIN for token {token.label!r} (differs from "
                                   "the PIN this process logged in with)")
        shared.users += 1
        return shared


def release(module: str, token_label: str) -> None:
    """One user fewer; the last one logs out and closes the session."""
    with _sessions_lock:
        shared = _sessions.get((module, token_label))
        if shared is None:
            return
        shared.users -= 1
        if shared.users > 0:
            return
        del _sessions[(module, token_label)]
    with shared.lock:
        shared.session.close()


def _login(token: Token, pin: str) -> Session:
    try:
        return token.open(rw=True, user_pin=pin)
    except (PinIncorrect, PinLenRange) as exc:
        raise KeyProviderError(NAME, f"wrong PIN for token {token.label!r} (the PIN file "
                               "does not match the token's user PIN)") from exc
    except PinLocked as exc:
        raise KeyProviderError(NAME, f"the user PIN of token {token.label!r} is locked; "
                               "the security officer must reset it") from exc
    except PKCS11Error as exc:
        raise KeyProviderError(NAME, f"cannot log in to token {token.label!r}: "
                               f"{exc!r}") from exc
