"""Owner names from API keys, and the settings of task ownership and draining (no server)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.api.routes.tasks import registration_ttl
from service.core.config import Settings
from service.core.errors import Forbidden, InvalidInput, Unauthorized
from service.core.identity import ANONYMOUS, hashed_owner, identify, parse_key_entry
from service.core.security import caller_of, check_admin_key, key_matches


def test_named_and_bare_keys() -> None:
    assert parse_key_entry("team-vision:s3cret").owner == "team-vision"
    assert parse_key_entry("team-vision:s3cret").secret == "s3cret"
    bare = parse_key_entry("0123abcd")
    assert bare.secret == "0123abcd" and bare.owner == hashed_owner("0123abcd")
    assert bare.owner.startswith("key-") and "0123abcd" not in bare.owner
    assert hashed_owner("a") != hashed_owner("b")
    # Only a valid name before the first ':' names a key; the rest is the key.
    assert parse_key_entry("ops:ab:cd").secret == "ab:cd"
    assert parse_key_entry("9x:abc").secret == "9x:abc"  # not a name: a bare key
    for reserved in ("anonymous:k", "legacy:k", "key-abc:k"):
        with pytest.raises(ValueError, match="reserved"):
            parse_key_entry(reserved)


def test_identify_and_checks() -> None:
    settings = Settings(api_keys="alice:a1,b2", admin_keys="ops:o3,a1")
    assert identify("a1", settings.api_keys, settings.admin_keys).admin  # admin wins
    assert caller_of(settings, "b2").owner == hashed_owner("b2")
    assert not caller_of(settings, "b2").admin
    assert caller_of(settings, "o3").owner == "ops"
    assert key_matches("o3", settings.admin_keys) and not key_matches("ops:o3", ["ops:o3"])
    check_admin_key(settings, "o3")
    with pytest.raises(Forbidden):
        caller_of(settings, "alice")  # a name is not a key
    with pytest.raises(Forbidden):
        check_admin_key(settings, "b2")
    with pytest.raises(Unauthorized):
        caller_of(settings, None)
    assert caller_of(Settings(), None) == ANONYMOUS and ANONYMOUS.admin


def test_settings_refuse_reserved_names_and_inconsistent_ttls() -> None:
    with pytest.raises(ValidationError, match="reserved"):
        Settings(api_keys="legacy:k")
    with pytest.raises(ValidationError, match="TAL_TASK_TTL_SECONDS"):
        Settings(max_task_ttl_seconds=60)  # the default TTL 0 (never) exceeds the bound
    assert Settings(max_task_ttl_seconds=60, task_ttl_seconds=60).task_ttl_seconds == 60


def test_registration_ttl() -> None:
    unbounded = Settings(task_ttl_seconds=5)
    assert registration_ttl(None, unbounded) == 5
    assert registration_ttl(0, unbounded) == 0  # never expires
    assert registration_ttl(10**9, unbounded) == 10**9
    with pytest.raises(InvalidInput, match="at most"):
        registration_ttl(2**31, unbounded)  # beyond what Redis and the scripts take
    bounded = Settings(task_ttl_seconds=30, max_task_ttl_seconds=60)
    assert registration_ttl(None, bounded) == 30 and registration_ttl(60, bounded) == 60
    for refused in (0, 61):
        with pytest.raises(InvalidInput, match="TAL_MAX_TASK_TTL_SECONDS"):
            registration_ttl(refused, bounded)
