"""API tokens and signed browser credentials.

A token reads `qm_<id>_<secret>`: `qm_<id>` (10 base32 characters) is public, shown in lists and the audit
so a person recognises it; `<secret>` is 256 random bits. Only an argon2id hash of the whole token is
stored (argon2-cffi, OWASP's minimum parameters: 19 MiB, 2 passes; ~40 ms per check on this machine), so
the database alone cannot be replayed. A verified token is remembered in memory (by its sha256) for a few
minutes so requests do not pay the hash; revocation and expiry are still read from the database on every
request.

Browser session cookies and stream tickets are HMAC-SHA256-signed strings naming a token id, a purpose and
an expiry (`v1.<token_id>.<purpose>.<expires unix>.<nonce>.<signature>`); they carry no secret of the token
and are only as valid as the token they name.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

TOKEN_PREFIX = "qm_"
TOKEN_RE = re.compile(r"^(qm_[a-z2-7]{10})_([A-Za-z0-9_-]{43})$")
TOKEN_ID_RE = r"^qm_[a-z2-7]{10}$"
MAX_TOKEN_CHARS = 64

_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
# A hash of nothing anyone holds: unknown token ids cost the same as wrong secrets (no timing oracle).
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(32))


def new_token() -> tuple[str, str]:
    """(token_id, full token) of a fresh token."""
    tid = TOKEN_PREFIX + base64.b32encode(secrets.token_bytes(10)).decode().lower()[:10]
    return tid, f"{tid}_{secrets.token_urlsafe(32)}"


def parse_token(token: str) -> str | None:
    """The token id of a well-formed token, else None."""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
        return None
    m = TOKEN_RE.match(token)
    return m.group(1) if m else None


def hash_token(token: str) -> str:
    return _hasher.hash(token)


def verify_token(stored_hash: str | None, token: str) -> bool:
    """argon2 check of `token` against `stored_hash` (None: an unknown id, checked against a dummy hash)."""
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, token) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


class VerifiedCache:
    """sha256(token) -> token id of tokens whose hash was checked, for `ttl_s` (bounded, thread-safe)."""

    def __init__(self, ttl_s: float = 300.0, size: int = 10_000):
        self.ttl_s = ttl_s
        self.size = size
        self._d: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def get(self, token: str) -> str | None:
        k = self.key(token)
        with self._lock:
            hit = self._d.get(k)
            if hit is None or hit[1] < time.monotonic():
                self._d.pop(k, None)
                return None
            return hit[0]

    def put(self, token: str, token_id: str) -> None:
        with self._lock:
            self._d[self.key(token)] = (token_id, time.monotonic() + self.ttl_s)
            while len(self._d) > self.size:
                self._d.popitem(last=False)

    def forget(self, token_id: str) -> None:
        with self._lock:
            for k in [k for k, (tid, _) in self._d.items() if tid == token_id]:
                del self._d[k]


def sign(key: bytes, token_id: str, purpose: str, ttl_s: float, *, now: float | None = None) -> tuple[str, int]:
    """A signed credential for `token_id` valid `ttl_s` seconds: (value, expires unix seconds)."""
    exp = int((time.time() if now is None else now) + ttl_s)
    body = f"v1.{token_id}.{purpose}.{exp}.{secrets.token_urlsafe(12)}"
    return f"{body}.{_mac(key, body)}", exp


def unsign(key: bytes, value: str, purpose: str, *, now: float | None = None) -> tuple[str, str] | None:
    """(token_id, nonce) of a valid, unexpired credential of `purpose`, else None."""
    if not isinstance(value, str) or len(value) > 256:
        return None
    parts = value.split(".")
    if len(parts) != 6 or parts[0] != "v1" or parts[2] != purpose or not re.fullmatch(TOKEN_ID_RE, parts[1]):
        return None
    body = ".".join(parts[:5])
    if not hmac.compare_digest(_mac(key, body), parts[5]):
        return None
    try:
        exp = int(parts[3])
    except ValueError:
        return None
    if exp < (time.time() if now is None else now):
        return None
    return parts[1], parts[4]


def _mac(key: bytes, body: str) -> str:
    return base64.urlsafe_b64encode(hmac.new(key, body.encode(), hashlib.sha256).digest()).decode().rstrip("=")
