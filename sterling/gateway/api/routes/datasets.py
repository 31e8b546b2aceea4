"""``/api/datasets``: listed datasets with their terms and ε ledger, from the chain index."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from sqlalchemy.exc import IntegrityError
from starlette.concurrency import run_in_threadpool

from marketplace.datasheet import Tag
from sterling.gateway.api.deps import BlobsDep, CacheDep, ServicesDep
from sterling.gateway.cache import index_version
from sterling.gateway.queries import (
    LISTED_STATUSES,
    DatasetFilter,
    dataset_detail,
    dataset_tags,
    list_datasets,
    search_words,
    sync_datasheets,
)
from sterling.gateway.schemas import (
    ADDRESS_PATTERN,
    HEX32_PATTERN,
    DatasetDetailPublic,
    DatasetListPublic,
    DatasetSort,
    DatasetStatusName,
    TagListPublic,
)
from sterling.gateway.services import GatewayServices

router = APIRouter(prefix="/datasets", tags=["datasets"])

MAX_ID = 2**63 - 1
MAX_WEI = 2**256 - 1
DatasetIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="dataset id (from 1)")]


def sync_datasheets_of(services: GatewayServices) -> None:
    """:func:`~sterling.gateway.queries.sync_datasheets` in its own transaction.

    A concurrent request that stored the same document first wins.
    """
    try:
        with services.index.transaction() as session:
            sync_datasheets(session, services.blobs)
    except IntegrityError:
        pass


@router.get("", response_model=DatasetListPublic)
async def datasets(
    services: ServicesDep,
    cache: CacheDep,
    sort: Annotated[DatasetSort, Query(description="order; a leading - reverses it")] = "-listed",
    schema_hash: Annotated[str | None, Query(pattern=HEX32_PATTERN, description="only datasets with this schema")] = None,
    provider: Annotated[str | None, Query(pattern=ADDRESS_PATTERN)] = None,
    min_price: Annotated[int | None, Query(ge=0, le=MAX_WEI, description="wei")] = None,
    max_price: Annotated[int | None, Query(ge=0, le=MAX_WEI, description="wei")] = None,
    min_remaining_epsilon: Annotated[float | None, Query(ge=0, le=1e12, allow_inf_nan=False, description="ε left in the budget")] = None,
    status: Annotated[
        list[DatasetStatusName] | None,
        Query(description="only datasets in these statuses (repeat the parameter for several); default active and paused"),
    ] = None,
    q: Annotated[
        str | None,
        Query(max_length=200, description="free text: every word in the datasheet (title, description, tags, provider, label, columns)"),
    ] = None,
    tag: Annotated[list[Tag] | None, Query(description="only datasets whose datasheet has all these tags (repeat the parameter)")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> Response:
    """Datasets, searched by their datasheets and filtered by status, schema, provider, price and remaining ε;
    sorted by listing, price, remaining ε, title or row count (datasets without a datasheet last).

    Delisted datasets are left out unless ``status`` asks for them.

    The most-read page of the marketplace: a rendered answer is reused until the index moves
    (:mod:`sterling.gateway.cache`), and a reused one is served without a database session
    or a worker thread when the index's version is known in memory.
    """
    f = DatasetFilter(
        schema_hash=schema_hash, provider=provider, min_price=min_price, max_price=max_price, min_remaining_epsilon=min_remaining_epsilon,
        statuses=tuple(sorted(set(status))) if status else LISTED_STATUSES,
        words=search_words(q), tags=tuple(sorted(set(tag))) if tag else (),
    )  # fmt: skip

    def version_from_database() -> tuple[int, int]:
        with services.index.session() as session:
            return index_version(session, services.cursor_key)

    def render() -> bytes:
        sync_datasheets_of(services)
        with services.index.session() as session:
            items, total = list_datasets(session, f, sort=sort, limit=limit, offset=offset)
        return DatasetListPublic(items=items, total=total).model_dump_json().encode()

    version = services.index_version() if services.index_version is not None else None
    if version is None:
        version = await run_in_threadpool(version_from_database)
    key = ("datasets", version, f, sort, limit, offset)
    body = cache.get(key)
    if body is None:
        body = await run_in_threadpool(cache.get_or_render, key, render)
    return Response(content=body, media_type="application/json")


@router.get("/tags", response_model=TagListPublic)
def tags(services: ServicesDep) -> TagListPublic:
    """The tags of listed datasets' datasheets with how many datasets carry each, most used first (at most 100)."""
    sync_datasheets_of(services)
    with services.index.session() as session:
        return TagListPublic(tags=dataset_tags(session))


@router.get("/{dataset_id}", response_model=DatasetDetailPublic, responses={404: {"description": "no such dataset"}})
def dataset(dataset_id: DatasetIdPath, services: ServicesDep, blobs: BlobsDep) -> DatasetDetailPublic:
    """One dataset (in any status) with its schema, its datasheet and columns, its ε budget history and the jobs that used it."""
    sync_datasheets_of(services)
    with services.index.session() as session:
        return dataset_detail(session, dataset_id, blobs)
