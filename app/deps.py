"""What a route may ask for, as `Annotated[..., Depends(...)]` aliases: the settings and every service.

Each service is made once, in create_app (the share service in the lifespan), and kept on
app.state; these read it from there, so a route names what it needs in its signature instead of
reaching into request.app.state. The functions are async only so FastAPI calls them on the event
loop instead of a worker thread: none of them blocks.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.compare.service import CompareService
from app.core.config import Settings
from app.core.registry import Registry
from app.dynamics.service import DynamicsService
from app.http.heavy import ResponseSlots, StreamSlots
from app.probe.service import ProbeService
from app.share.service import ShareService, ShareUnavailable
from app.trace.service import TraceService


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_registry(request: Request) -> Registry:
    return request.app.state.registry


async def get_traces(request: Request) -> TraceService:
    return request.app.state.service


async def get_probes(request: Request) -> ProbeService:
    return request.app.state.probes


async def get_dynamics(request: Request) -> DynamicsService:
    return request.app.state.dynamics


async def get_compare(request: Request) -> CompareService:
    return request.app.state.compare


def shares_of(request: Request) -> ShareService:
    """The share service, or ShareUnavailable (503) before the lifespan has opened its store; plain,
    for a route that renders that refusal itself."""
    shares = getattr(request.app.state, "shares", None)
    if shares is None:
        raise ShareUnavailable("sharing is not ready: the share store opens when the server starts")
    return shares


async def get_shares(request: Request) -> ShareService:
    return shares_of(request)


async def get_responses(request: Request) -> ResponseSlots:
    return request.app.state.responses


async def get_streams(request: Request) -> StreamSlots:
    return request.app.state.streams


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[Registry, Depends(get_registry)]
TracesDep = Annotated[TraceService, Depends(get_traces)]
ProbesDep = Annotated[ProbeService, Depends(get_probes)]
DynamicsDep = Annotated[DynamicsService, Depends(get_dynamics)]
CompareDep = Annotated[CompareService, Depends(get_compare)]
SharesDep = Annotated[ShareService, Depends(get_shares)]
ResponsesDep = Annotated[ResponseSlots, Depends(get_responses)]
StreamsDep = Annotated[StreamSlots, Depends(get_streams)]
