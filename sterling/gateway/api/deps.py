"""Dependencies of the API routes, as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from marketplace.blobstore import BlobStore
from sterling.gateway.cache import ResponseCache
from sterling.gateway.feed import EventFeed
from sterling.gateway.rpc import RpcGateway
from sterling.gateway.services import GatewayServices
from sterling.gateway.settings import GatewaySettings


def get_services(request: Request) -> GatewayServices:
    services: GatewayServices = request.app.state.services
    return services


def get_gateway_settings(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.settings
    return settings


def get_feed(request: Request) -> EventFeed:
    feed: EventFeed = request.app.state.feed
    return feed


def get_cache(request: Request) -> ResponseCache:
    cache: ResponseCache = request.app.state.cache
    return cache


def get_rpc(request: Request) -> RpcGateway:
    rpc: RpcGateway = request.app.state.rpc
    return rpc


ServicesDep = Annotated[GatewayServices, Depends(get_services)]
SettingsDep = Annotated[GatewaySettings, Depends(get_gateway_settings)]
FeedDep = Annotated[EventFeed, Depends(get_feed)]
RpcDep = Annotated[RpcGateway, Depends(get_rpc)]
CacheDep = Annotated[ResponseCache, Depends(get_cache)]


def get_session(services: ServicesDep) -> Iterator[Session]:
    with services.index.session() as session:
        yield session


def get_blobs(services: ServicesDep) -> BlobStore:
    return services.blobs


SessionDep = Annotated[Session, Depends(get_session)]
BlobsDep = Annotated[BlobStore, Depends(get_blobs)]
