"""API keys: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``, compared in constant time."""

from __future__ import annotations

import hmac

from service.core.config import Settings
from service.core.errors import Forbidden, Unauthorized
from service.core.identity import ANONYMOUS, Caller, identify, parse_key_entry

BEARER_PREFIX = "bearer "
API_KEY_HEADER = "x-api-key"


def presented_key(authorization: str | None, api_key: str | None) -> str | None:
    """The key a request carries, from either header."""
    if api_key:
        return api_key
    if authorization and authorization.lower().startswith(BEARER_PREFIX):
        return authorization[len(BEARER_PREFIX) :].strip()
    return None


def key_matches(key: str, allowed: list[str]) -> bool:
    """Constant-time membership: every allowed key is compared, whatever matches first."""
    given = key.encode()
    found = False
    for candidate in allowed:
        found |= hmac.compare_digest(given, parse_key_entry(candidate).secret.encode())
    return found


def caller_of(settings: Settings, key: str | None) -> Caller:
    """The owner ``key`` stands for (``service.core.identity``); any API key or admin key
    passes. Without keys configured every caller is the anonymous admin."""
    if not settings.auth_enabled:
        return ANONYMOUS
    if not key:
        raise Unauthorized(
            "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
            {"WWW-Authenticate": "Bearer"},
        )
    caller = identify(key, settings.api_keys, settings.admin_keys)
    if caller is None:
        raise Forbidden("API key not accepted")
    return caller


def check_api_key(settings: Settings, key: str | None) -> None:
    """Any API key or admin key passes; nothing is checked when no keys are configured."""
    caller_of(settings, key)


def check_admin_key(settings: Settings, key: str | None) -> None:
    """Admin endpoints: an admin key. Open only when no keys at all are configured."""
    if not settings.auth_enabled:
        return
    if not key:
        raise Unauthorized("missing admin key", {"WWW-Authenticate": "Bearer"})
    if not settings.admin_keys or not key_matches(key, settings.admin_keys):
        raise Forbidden("this endpoint needs an admin key")
