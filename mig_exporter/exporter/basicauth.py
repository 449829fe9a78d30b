"""``basic_auth_users`` of the web config: checks ``Authorization: Basic`` against bcrypt hashes.

bcrypt is slow on purpose (60 ms at cost 10, doubling with each step), so three things bound it:
a hash above ``MAX_COST`` is refused at load (``$2b$31$`` would take days per check); verified
answers are remembered by a SHA-256 digest (never in clear) as exporter-toolkit does, since
Prometheus sends the same credentials every scrape; and the server runs the checks one at a time
off its event loop. A failed check always costs the work of one hash at the highest cost in the
file, whether the user exists or not and whatever that user's own cost, so response times do not
tell which user names exist.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading
from collections.abc import Mapping

import bcrypt

from mig_exporter.errors import InputError

# htpasswd -B takes 4 to 17; above 14 a check takes over a second of CPU per failed login.
MAX_COST = 14
_BCRYPT_MAX_BYTES = 72
_MAX_REMEMBERED = 1024
_HASH = re.compile(r"\$2[abxy]?\$(?P<cost>\d\d)\$[./A-Za-z0-9]{53}", re.ASCII)
_HINT = "make one with: htpasswd -nBC 10 '' | tr -d ':'"


def checked_users(where: str, users: object) -> dict[str, bytes]:
    """The ``basic_auth_users`` mapping, each hash parsed and its cost bounded, or ``InputError``."""
    if not isinstance(users, dict):
        raise InputError(f"{where}: basic_auth_users: expected a mapping of user: bcrypt hash")
    checked = {}
    for user, hashed in users.items():
        name = str(user)
        if ":" in name:  # RFC 7617: the user-id ends at the first colon, so it could never log in
            raise InputError(f"{where}: basic_auth_users: a user name cannot contain ':'")
        match = _HASH.fullmatch(str(hashed))
        if match is None:
            raise InputError(f"{where}: basic_auth_users.{name}: not a bcrypt hash ({_HINT})")
        cost = int(match["cost"])
        if not 4 <= cost <= MAX_COST:
            raise InputError(f"{where}: basic_auth_users.{name}: bcrypt cost {cost} is outside 4-{MAX_COST}"
                             f" (each check would take {0.06 * 2 ** (cost - 10):.3g}s; {_HINT})")
        try:
            bcrypt.checkpw(b"", match[0].encode())
        except ValueError:
            raise InputError(f"{where}: basic_auth_users.{name}: not a bcrypt hash ({_HINT})") from None
        checked[name] = match[0].encode()
    return checked


def _cost(hashed: bytes) -> int:
    return int(hashed[4:6])


def _decoy(cost: int) -> bytes:
    """A well-formed hash of that cost that no password matches (its checksum is all zero bits)."""
    return bcrypt.gensalt(cost) + b"." * 31


class BasicAuth:
    def __init__(self, users: Mapping[str, bytes]) -> None:
        self._users = dict(users)
        self._top_cost = max((_cost(hashed) for hashed in self._users.values()), default=4)
        self._decoys = {cost: _decoy(cost) for cost in range(4, self._top_cost + 1)}
        self._answers: dict[bytes, bool] = {}
        self._lock = threading.Lock()

    def remembered(self, authorization: str | bytes | None) -> bool:
        """True when these exact credentials were verified before: no bcrypt needed."""
        key = self._key(authorization)
        with self._lock:
            return key is not None and self._answers.get(key, False)

    def allows(self, authorization: str | bytes | None) -> bool:
        credentials = _basic_credentials(authorization)
        if credentials is None:
            return False
        key = self._key(authorization)
        with self._lock:
            if key in self._answers:
                return self._answers[key]
        user, password = credentials
        allowed = self._check(self._users.get(user), password[:_BCRYPT_MAX_BYTES])
        with self._lock:
            if len(self._answers) >= _MAX_REMEMBERED:
                self._answers.clear()
            if key is not None:
                self._answers[key] = allowed
        return allowed

    def _check(self, hashed: bytes | None, password: bytes) -> bool:
        """bcrypt only ever hashes the first 72 bytes (htpasswd and Go's bcrypt cut there too);
        bcrypt 5 raises instead of cutting. A failure is padded to 2**top_cost units of work:
        after a check at cost c, decoys at c, c+1, ..., top-1 add up to 2**top - 2**c."""
        if hashed is None:
            bcrypt.checkpw(password, self._decoys[self._top_cost])
            return False
        if bcrypt.checkpw(password, hashed):
            return True
        for cost in range(_cost(hashed), self._top_cost):
            bcrypt.checkpw(password, self._decoys[cost])
        return False

    def _key(self, authorization: str | bytes | None) -> bytes | None:
        credentials = _basic_credentials(authorization)
        if credentials is None:
            return None
        user, password = credentials
        return hashlib.sha256(b"\0".join((user.encode(), password, self._users.get(user, b"")))).digest()


def _basic_credentials(authorization: str | bytes | None) -> tuple[str, bytes] | None:
    if isinstance(authorization, bytes):
        authorization = authorization.decode("latin-1")
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, separator, password = base64.b64decode(encoded.strip(), validate=True).partition(b":")
        return (user.decode(), password) if separator else None
    except (binascii.Error, UnicodeDecodeError):
        return None
