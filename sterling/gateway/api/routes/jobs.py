"""``/api/jobs``: training jobs, their timeline, progress, payments and sealed result."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import FileResponse, Response

from marketplace.model_card import build_card, card_markdown
from sterling.gateway.api.deps import BlobsDep, CacheDep, ServicesDep, SessionDep
from sterling.gateway.api.routes.datasets import MAX_ID
from sterling.gateway.errors import NotFound
from sterling.gateway.queries import get_job, job_detail, list_jobs
from sterling.gateway.schemas import ADDRESS_PATTERN, JobDetailPublic, JobListPublic, JobStatusName

router = APIRouter(prefix="/jobs", tags=["jobs"])

JobIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="job id (from 1)")]
BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


@router.get("", response_model=JobListPublic)
def jobs(
    session: SessionDep,
    consumer: Annotated[str | None, Query(pattern=ADDRESS_PATTERN)] = None,
    status: Annotated[JobStatusName | None, Query()] = None,
    dataset_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> JobListPublic:
    """Jobs, newest first, filtered by consumer, status or dataset."""
    items, total = list_jobs(session, consumer=consumer, status=status, dataset_id=dataset_id, limit=limit, offset=offset)
    return JobListPublic(items=items, total=total)


@router.get("/{job_id}", response_model=JobDetailPublic, responses={404: {"description": "no such job"}})
def job(job_id: JobIdPath, session: SessionDep, services: ServicesDep) -> JobDetailPublic:
    """One job with its model spec, metrics document, timeline, live progress and payments."""
    progress = services.status.get(job_id) if services.status is not None else None
    return job_detail(session, job_id, services.blobs, progress)


@router.get(
    "/{job_id}/result",
    response_class=FileResponse,
    responses={200: {"content": BINARY, "description": "the sealed model (STRS envelope)"}, 404: {"description": "no result yet"}},
)
def job_result(job_id: JobIdPath, session: SessionDep, blobs: BlobsDep) -> FileResponse:
    """The sealed model of a completed job: only the consumer's key opens it."""
    row = get_job(session, job_id)
    if row.result_hash is None:
        raise NotFound(f"job {job_id} has no result yet")
    path = blobs.path(row.result_hash)
    if not path.is_file():
        raise NotFound(f"the sealed result {row.result_hash} of job {job_id} is not in the blob store")
    return FileResponse(path, media_type="application/octet-stream", filename=f"job-{job_id}-model.sealed")


@router.get(
    "/{job_id}/card",
    response_class=Response,
    responses={
        200: {
            "content": {"application/json": {"schema": {"type": "object"}}, "text/markdown": {"schema": {"type": "string"}}},
            "description": "the model card (marketplace.model_card: format sterling-model-card/1)",
        },
        404: {"description": "no such job, or no model yet"},
    },
)
def job_card(
    job_id: JobIdPath,
    session: SessionDep,
    services: ServicesDep,
    cache: CacheDep,
    format: Annotated[Literal["json", "markdown"], Query(description="the JSON document or its Markdown rendering")] = "json",  # noqa: A002
) -> Response:
    """A completed job's model card: inputs in order with their standardisation, classes, datasets
    and providers, the privacy accounting, the receipt. Built from the chain and the public
    documents the receipt committed to; the same document ``sterling model card`` prints."""
    row = get_job(session, job_id)
    if row.result_hash is None:
        raise NotFound(f"job {job_id} has no model yet")
    document = json.loads(
        cache.get_or_render(
            ("card", job_id, row.result_hash), lambda: json.dumps(build_card(services.market, services.blobs, job_id)).encode()
        )
    )
    if format == "markdown":
        return Response(content=card_markdown(document), media_type="text/markdown; charset=utf-8")
    return Response(content=json.dumps(document), media_type="application/json")
