"""Dependencies as ``Annotated`` aliases: the worker state, settings and API-key checks."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from service.core.config import Settings
from service.core.identity import Caller
from service.core.security import caller_of, check_admin_key, check_api_key, presented_key
from service.state import ServiceState


def get_state(request: Request) -> ServiceState:
    return request.app.state.service


StateDep = Annotated[ServiceState, Depends(get_state)]


def get_settings(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def api_key(
    settings: SettingsDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> None:
    """Any configured API (or admin) key; open when no keys are configured."""
    check_api_key(settings, presented_key(authorization, x_api_key))


def admin_key(
    settings: SettingsDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> None:
    """An admin key; open only when no keys at all are configured."""
    check_admin_key(settings, presented_key(authorization, x_api_key))


ApiKeyDep = Depends(api_key)
AdminKeyDep = Depends(admin_key)


def caller(
    settings: SettingsDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Caller:
    """The owner the request's key stands for (checked as ``api_key`` does)."""
    return caller_of(settings, presented_key(authorization, x_api_key))


CallerDep = Annotated[Caller, Depends(caller)]
