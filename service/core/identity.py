"""Who is calling: the owner name an API key stands for, never the key itself.

A key entry in ``TAL_API_KEYS`` / ``TAL_ADMIN_KEYS`` is either a bare key or ``name:key``. A
named key's owner is its name (``team-vision``), what an operator wants to read in
``GET /v1/tasks`` and in logs; a bare key's owner is ``key-`` and the first hex digits of a
domain-separated sha256 of the key. That is stable across replicas and restarts, and for keys
with the entropy API keys are made with (``openssl rand -hex 24``) it reveals nothing of the key.
The key itself is never stored, logged or shown.

Without any key configured (local use) every caller is the ``anonymous`` owner with admin
rights, so everything works as it does without ownership.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

KEY_NAME_SEPARATOR = ":"
KEY_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
HASHED_OWNER_PREFIX = "key-"
HASHED_OWNER_HEX_CHARS = 12
OWNER_HASH_DOMAIN = b"tal-owner\x00"
ANONYMOUS_OWNER = "anonymous"  # every caller when no keys are configured
LEGACY_OWNER = "legacy"  # tasks registered before ownership existed
RESERVED_OWNERS = (ANONYMOUS_OWNER, LEGACY_OWNER)


@dataclass(frozen=True)
class KeyEntry:
    """One configured key: the secret and the owner name it stands for."""

    secret: str
    owner: str


@dataclass(frozen=True)
class Caller:
    """The owner a request acts for, and whether it may act on every owner's tasks."""

    owner: str
    admin: bool


def hashed_owner(secret: str) -> str:
    """``key-<12 hex>``: the owner name of a key configured without a name."""
    digest = hashlib.sha256(OWNER_HASH_DOMAIN + secret.encode()).hexdigest()
    return HASHED_OWNER_PREFIX + digest[:HASHED_OWNER_HEX_CHARS]


def check_owner_name(name: str) -> None:
    """Raises ValueError, saying what to change, for a name a key cannot be given."""
    if not re.match(KEY_NAME_PATTERN, name):
        raise ValueError(
            f"key name {name!r} must match {KEY_NAME_PATTERN} (letters, digits, '_', '.', '-')"
        )
    if name in RESERVED_OWNERS or name.startswith(HASHED_OWNER_PREFIX):
        raise ValueError(
            f"key name {name!r} is reserved ({', '.join(RESERVED_OWNERS)} and names starting "
            f"with {HASHED_OWNER_PREFIX!r}); choose another"
        )


def parse_key_entry(entry: str) -> KeyEntry:
    """``name:key`` -> the key named ``name``; anything else is a bare key.

    Only the text before the first ``:`` is a name, and only when it is a valid name, so a key
    that itself contains ``:`` must be written with a name in front (``name:ab:cd``).
    """
    name, separator, secret = entry.partition(KEY_NAME_SEPARATOR)
    if separator and secret and re.match(KEY_NAME_PATTERN, name):
        check_owner_name(name)
        return KeyEntry(secret, name)
    return KeyEntry(entry, hashed_owner(entry))


def identify(key: str, api_keys: list[str], admin_keys: list[str]) -> Caller | None:
    """The caller ``key`` stands for; None when it is not configured.

    Every configured key is compared in constant time, whatever matches first, and an admin
    key wins over the same key among the API keys.
    """
    given = key.encode()
    found: Caller | None = None
    for entries, admin in ((api_keys, False), (admin_keys, True)):
        for entry in entries:
            parsed = parse_key_entry(entry)
            if hmac.compare_digest(given, parsed.secret.encode()):
                found = Caller(parsed.owner, admin)
    return found


ANONYMOUS = Caller(ANONYMOUS_OWNER, admin=True)
