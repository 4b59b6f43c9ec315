"""``/api/v1/jobs``: create, list, read and run jobs (spec §5.1)."""

from __future__ import annotations

from uuid import UUID

from flask import after_this_request, request
from flask.views import MethodView

from app.api.auth import authenticate_request, current_actor
from app.api.idempotency import IDEMPOTENCY_KEY_DOC, idempotent
from app.api.openapi import documented
from app.api.pagination import Blueprint
from app.api.schemas import (JOB_EXAMPLE, ExecutionQuerySchema, ExecutionSchema, JobCreateSchema, JobListQuerySchema,
                             JobMetricsQuerySchema, JobMetricsSchema, JobReplaceSchema, JobSchema, JobUpdateSchema)
from app.errors import InvalidInput
from app.services import executions, job_metrics, jobs

blp = Blueprint("jobs", __name__, url_prefix="/api/v1/jobs", description="Jobs: what runs, and when")
blp.before_request(authenticate_request)


@blp.route("")
class Jobs(MethodView):
    @documented(blp, requires="any role (admin: every job; job_creator: own jobs; team_viewer: the team's jobs)")
    @blp.arguments(JobListQuerySchema, location="query")
    @blp.response(200, JobSchema(many=True))
    @blp.paginate()
    def get(self, query, pagination_parameters):
        """List the jobs you may see, newest first (any role); filter by status, owner (id or email),
        team, q (part of the name) and job_type; ``sort`` by another field."""
        owner = query.get("owner")
        found, total = jobs.list_jobs(
            actor=current_actor(), limit=pagination_parameters.page_size, offset=pagination_parameters.first_item,
            status=query.get("status"), owner_id=jobs.owner_id_for(owner) if owner is not None else None,
            team_id=query.get("team"), search=query.get("q"), job_type=query.get("job_type"), sort=query["sort"])
        pagination_parameters.item_count = total
        return found

    @documented(blp, requires="job_creator or admin", errors=(403, 409))
    @blp.doc(parameters=[IDEMPOTENCY_KEY_DOC])
    @idempotent
    @blp.arguments(JobCreateSchema, example=JOB_EXAMPLE)
    @blp.response(201, JobSchema)
    def post(self, data):
        """Create a job (role admin or job_creator). With an ``Idempotency-Key``, a retry of the same
        request answers as the first did and creates nothing more."""
        return jobs.create_job(actor=current_actor(), data=data)


#: The header that guards a change against lost updates, as the document shows it.
IF_MATCH = {"in": "header", "name": "If-Match", "required": False, "schema": {"type": "string"},
            "description": "the job's ETag as you read it, e.g. \"3\"; 409 if the job changed since",
            "example": '"3"'}


def _expected_version(data: dict) -> int | None:
    """The version the client read: ``If-Match: "<version>"`` or the body's ``version``."""
    body_version = data.pop("version", None)
    header = request.headers.get("If-Match")
    if header is None or header.strip() == "*":
        return body_version
    try:
        return int(header.strip().removeprefix("W/").strip('"'))
    except ValueError:
        raise InvalidInput({"If-Match": 'must be the job\'s ETag, e.g. "3"'}) from None


def _with_etag(job):
    """The job, with its version as the response's ETag (send it back as If-Match)."""

    @after_this_request
    def etag(response):
        response.headers["ETag"] = f'"{job.version}"'
        return response

    return job


@blp.route("/<uuid:job_id>")
class JobById(MethodView):
    @documented(blp, requires="admin, the job's owner, or a team_viewer of the job's team", errors=(404,))
    @blp.response(200, JobSchema)
    def get(self, job_id: UUID):
        """A job's configuration (its owner, its team's viewers, admins); ETag = its version."""
        return _with_etag(jobs.get_job(actor=current_actor(), job_id=job_id))

    @documented(blp, requires="job_creator (own jobs) or admin", errors=(403, 404, 409))
    @blp.arguments(JobReplaceSchema, example={**JOB_EXAMPLE, "version": 3})
    @blp.response(200, JobSchema)
    @blp.doc(parameters=[IF_MATCH])
    def put(self, data, job_id: UUID):
        """Replace a job's configuration; fields left out take their defaults (owner or admin).

        409 if ``If-Match`` (or ``version``) is not the current version.
        """
        version = _expected_version(data)
        return _with_etag(jobs.update_job(actor=current_actor(), job_id=job_id, data=data, partial=False,
                                          expected_version=version))

    @documented(blp, requires="job_creator (own jobs) or admin", errors=(403, 404, 409))
    @blp.arguments(JobUpdateSchema, example={"schedule": "0 3 * * *", "version": 3})
    @blp.response(200, JobSchema)
    @blp.doc(parameters=[IF_MATCH])
    def patch(self, data, job_id: UUID):
        """Change some fields of a job (owner or admin); 409 on a stale ``If-Match``/``version``."""
        version = _expected_version(data)
        return _with_etag(jobs.update_job(actor=current_actor(), job_id=job_id, data=data, partial=True,
                                          expected_version=version))

    @documented(blp, requires="job_creator (own jobs) or admin", errors=(403, 404, 409, 422))
    @blp.response(200, JobSchema)
    @blp.doc(parameters=[IF_MATCH])
    def delete(self, job_id: UUID):
        """Delete a job: it fires nothing more, its history stays (owner or admin)."""
        return jobs.delete_job(actor=current_actor(), job_id=job_id, expected_version=_expected_version({}))


@blp.route("/<uuid:job_id>/run")
class JobRun(MethodView):
    @documented(blp, requires="job_creator (own jobs) or admin", errors=(403, 404, 409, 422))
    @blp.doc(parameters=[IDEMPOTENCY_KEY_DOC])
    @idempotent
    @blp.response(202, ExecutionSchema)
    def post(self, job_id: UUID):
        """Run the job now; returns the queued execution (owner or admin). With an
        ``Idempotency-Key``, a retry of the same request returns the same execution."""
        return executions.trigger_manual_run(actor=current_actor(), job_id=job_id)


@blp.route("/<uuid:job_id>/pause")
class JobPause(MethodView):
    @documented(blp, requires="job_creator (own jobs) or admin", errors=(403, 404, 409))
    @blp.response(200, JobSchema)
    def post(self, job_id: UUID):
        """Pause the job: it fires nothing until resumed (owner or admin)."""
        return jobs.pause_job(actor=current_actor(), job_id=job_id)


@blp.route("/<uuid:job_id>/resume")
class JobResume(MethodView):
    @documented(blp, requires="job_creator (own jobs) or admin", errors=(403, 404, 409))
    @blp.response(200, JobSchema)
    def post(self, job_id: UUID):
        """Resume the job; the pause is replayed only if its misfire policy says so (owner or admin)."""
        job, _ = jobs.resume_job(actor=current_actor(), job_id=job_id)
        return job


@blp.route("/<uuid:job_id>/executions")
class JobExecutions(MethodView):
    @documented(blp, requires="admin, the job's owner, or a team_viewer of the job's team", errors=(404,))
    @blp.arguments(ExecutionQuerySchema, location="query")
    @blp.response(200, ExecutionSchema(many=True))
    @blp.paginate()
    def get(self, query, job_id: UUID, pagination_parameters):
        """The job's executions and ledger records (skipped, missed), newest fire time first; filter by
        status, trigger and time ranges; ``sort`` by start time or duration."""
        statuses = [s.strip() for value in query.get("status", []) for s in value.split(",") if s.strip()]
        found, total = executions.list_job_executions(
            actor=current_actor(), job_id=job_id, limit=pagination_parameters.page_size,
            offset=pagination_parameters.first_item, statuses=statuses, trigger=query.get("trigger"),
            scheduled_after=query.get("scheduled_after"), scheduled_before=query.get("scheduled_before"),
            started_after=query.get("started_after"), started_before=query.get("started_before"),
            sort=query["sort"])
        pagination_parameters.item_count = total
        return found


@blp.route("/<uuid:job_id>/metrics")
class JobMetrics(MethodView):
    @documented(blp, requires="admin, the job's owner, or a team_viewer of the job's team", errors=(404,))
    @blp.arguments(JobMetricsQuerySchema, location="query")
    @blp.response(200, JobMetricsSchema)
    def get(self, query, job_id: UUID):
        """Runs by status, success rate, durations (p50, p95, max) and a per-day series over the last
        ``days`` days, 1 to 90 (whoever may see the job)."""
        return job_metrics.job_metrics(actor=current_actor(), job_id=job_id, days=query["days"])
