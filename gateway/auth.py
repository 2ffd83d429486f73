"""Authentication: hashed client secrets, operator tokens, failed-logon lockout, IP allow-lists.

Client secrets are stored as scrypt hashes (a slow KDF, so a stolen config does not give away
the secrets) and compared in constant time. Operator tokens for the admin plane are long random
strings, so a fast SHA-256 digest is enough; they are compared in constant time too.
The lockout counts failures per (user, source address) in a sliding window, with a firm-wide
rate guard over all failures; it is pure state with time passed in and its tables are bounded.

KDF cost: new hashes use scrypt N = 2**17, r = 8, p = 1 (OWASP's current minimum for scrypt),
about 128 MiB and a few hundred milliseconds per hash. Older, cheaper hashes are still accepted;
``needs_rehash`` says which, and the gateway names those users at start and in /v1/status.
Since every hash takes 128 MiB, the gateway runs at most ``[auth].max_concurrent_hashes`` at
once (``gateway.session.LogonGuard``).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets
from collections import OrderedDict

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**17, 8, 1
SCRYPT_MAX_N = 2**20  # a hash asking for more is refused (1 GiB per verification)


def _maxmem(n: int, r: int, p: int) -> int:
    """What hashlib.scrypt needs for these parameters (its default cap is 32 MiB)."""
    return 128 * r * (n + p + 2) + 1024 * 1024


def hash_secret(secret: str, *, n: int = SCRYPT_N, salt: bytes | None = None) -> str:
    """'scrypt$N$r$p$salt$hash' for a client secret (what goes in the config file)."""
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P, dklen=32,
                            maxmem=_maxmem(n, SCRYPT_R, SCRYPT_P))
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_secret(stored: str, secret: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        n_, r_, p_ = int(n), int(r), int(p)
        if n_ > SCRYPT_MAX_N or r_ > 32 or p_ > 16:
            return False
        got = hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt), n=n_, r=r_, p=p_,
                             dklen=len(digest) // 2, maxmem=_maxmem(n_, r_, p_))
    except (ValueError, TypeError, MemoryError):
        return False
    return hmac.compare_digest(got.hex(), digest)


def check_secret_hash(stored: str) -> str | None:
    """None when ``stored`` looks like a hash from ``hash_secret``, else what is wrong."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return "expected 'scrypt$N$r$p$salt$hash' (make one with `fengkong hash-secret`)"
    try:
        int(parts[1]), int(parts[2]), int(parts[3]), bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
    except ValueError:
        return "malformed scrypt hash"
    n = int(parts[1])
    if n < 2 or n & (n - 1) or n > SCRYPT_MAX_N or int(parts[2]) > 32 or int(parts[3]) > 16:
        return f"scrypt N must be a power of two up to {SCRYPT_MAX_N}, r <= 32, p <= 16"
    return None


def needs_rehash(stored: str) -> bool:
    """True for a hash cheaper than today's parameters: accepted, but the user should get a new
    one (``fengkong hash-secret``)."""
    parts = stored.split("$")
    try:
        return int(parts[1]) < SCRYPT_N or int(parts[2]) < SCRYPT_R
    except (IndexError, ValueError):
        return True


# Verified against when the user is unknown, so an unknown user costs as much as a wrong secret
# (same parameters as a new hash; the digest matches nothing).
DUMMY_HASH = f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${'00' * 16}${'00' * 32}"


def hash_token(token: str) -> str:
    return "sha256$" + hashlib.sha256(token.encode()).hexdigest()


def verify_token(stored: str, token: str) -> bool:
    return hmac.compare_digest(stored, hash_token(token))


def new_token() -> str:
    return secrets.token_urlsafe(32)


def ip_allowed(allow: list[str], address: str) -> bool:
    """Whether ``address`` is inside one of the networks in ``allow`` (empty list = any)."""
    if not allow:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net, strict=False) for net in allow)


class Lockout:
    """Failed-logon lockout, per (user, source address), with a firm-wide rate guard.

    * ``max_failures`` failures of one user from one address within ``window_ns`` lock that
      user out *from that address* for ``lockout_ns``: guessing from elsewhere cannot lock out
      the real client's address.
    * The firm-wide guard: more than ``firm_max_failures`` failures (all users, all addresses)
      within ``window_ns`` and logons are refused from every address that has not logged on
      successfully, until the rate falls again; addresses with a success (the real clients;
      the last ``max_entries`` of them) keep logging on, and so do addresses on the user's own
      allow-list (``gateway.session.LogonGuard``). It caps a guesser who has many addresses.
    * Unknown user names share one key per address (``user=""``), so inventing names does not
      grow the tables; the tables hold at most ``max_entries`` keys each (oldest dropped).
    """

    def __init__(self, max_failures: int, window_ns: int, lockout_ns: int,
                 firm_max_failures: int = 100, max_entries: int = 10_000) -> None:
        self.max_failures = max_failures
        self.window_ns = window_ns
        self.lockout_ns = lockout_ns
        self.firm_max_failures = firm_max_failures
        self.max_entries = max_entries
        self._failures: OrderedDict[tuple[str, str], list[int]] = OrderedDict()
        self._locked_until: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._firm: list[int] = []  # times of recent failures, firm-wide (at most firm_max + 1)
        self._good: OrderedDict[str, int] = OrderedDict()  # addresses with a successful logon

    def locked(self, user: str, now: int, source: str = "") -> bool:
        key = (user, source)
        until = self._locked_until.get(key)
        if until is None:
            return False
        if now >= until:
            del self._locked_until[key]
            return False
        return True

    def guard_tripped(self, source: str, now: int) -> bool:
        """The firm-wide guard is on and ``source`` has no recent successful logon."""
        self._firm = [t for t in self._firm if t > now - self.window_ns]
        if len(self._firm) <= self.firm_max_failures:
            return False
        return source not in self._good

    def failed(self, user: str, now: int, source: str = "") -> bool:
        """Record a failure; True when it locks the user out from ``source``."""
        key = (user, source)
        self._firm.append(now)
        if len(self._firm) > self.firm_max_failures + 1:
            del self._firm[0]
        recent = [t for t in self._failures.pop(key, []) if t > now - self.window_ns]
        recent.append(now)
        if len(recent) >= self.max_failures:
            self._locked_until.pop(key, None)
            self._locked_until[key] = now + self.lockout_ns
            _bound(self._locked_until, self.max_entries)
            return True
        self._failures[key] = recent
        _bound(self._failures, self.max_entries)
        return False

    def succeeded(self, user: str, now: int = 0, source: str = "") -> None:
        self._failures.pop((user, source), None)
        self._good.pop(source, None)
        self._good[source] = now
        _bound(self._good, self.max_entries)

    def unlock(self, user: str) -> int:
        """Lift every lockout and forget the failures of ``user`` (an operator's decision);
        the number of addresses it was locked out from."""
        keys = [k for k in self._locked_until if k[0] == user]
        for k in keys:
            del self._locked_until[k]
        for k in [k for k in self._failures if k[0] == user]:
            del self._failures[k]
        return len(keys)

    def locked_sources(self, user: str, now: int) -> list[str]:
        return sorted(k[1] for k, until in self._locked_until.items()
                      if k[0] == user and until > now)

    def sizes(self) -> tuple[int, int]:
        return len(self._failures), len(self._locked_until)


def _bound(table: OrderedDict, limit: int) -> None:  # type: ignore[type-arg]
    while len(table) > limit:
        table.popitem(last=False)
