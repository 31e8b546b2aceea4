"""``/api/jobs``: training jobs, their timeline, progress, payments and sealed result."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import FileResponse

from sterling.gateway.api.deps import BlobsDep, ServicesDep, SessionDep
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
