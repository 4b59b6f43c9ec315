"""``/api/v1/jobs``: create, list, read and run jobs (spec §5.1)."""

from __future__ import annotations

from uuid import UUID

from flask import after_this_request, request
from flask.views import MethodView

from app.api.auth import authenticate_request, current_actor
from app.api.idempotency import IDEMPOTENCY_KEY_DOC, idempotent
from app.api.pagination import Blueprint
from app.api.schemas import (ExecutionQuerySchema, ExecutionSchema, JobCreateSchema, JobListQuerySchema,
                             JobMetricsQuerySchema, JobMetricsSchema, JobReplaceSchema, JobSchema, JobUpdateSchema)
from app.errors import InvalidInput
from app.services import executions, job_metrics, jobs

blp = Blueprint("jobs", __name__, url_prefix="/api/v1/jobs", description="Jobs: what runs, and when")
blp.before_request(authenticate_request)


@blp.route("")
class Jobs(MethodView):
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

    @blp.doc(parameters=[IDEMPOTENCY_KEY_DOC])
    @idempotent
    @blp.arguments(JobCreateSchema)
    @blp.response(201, JobSchema)
    def post(self, data):
        """Create a job (role admin or job_creator). With an ``Idempotency-Key``, a retry of the same
        request answers as the first did and creates nothing more."""
        return jobs.create_job(actor=current_actor(), data=data)


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
    @blp.response(200, JobSchema)
    def get(self, job_id: UUID):
        """A job's configuration (its owner, its team's viewers, admins); ETag = its version."""
        return _with_etag(jobs.get_job(actor=current_actor(), job_id=job_id))

    @blp.arguments(JobReplaceSchema)
    @blp.response(200, JobSchema)
    def put(self, data, job_id: UUID):
        """Replace a job's configuration; fields left out take their defaults (owner or admin).
        409 if ``If-Match`` (or ``version``) is not the current version."""
        version = _expected_version(data)
        return _with_etag(jobs.update_job(actor=current_actor(), job_id=job_id, data=data, partial=False,
                                          expected_version=version))

    @blp.arguments(JobUpdateSchema)
    @blp.response(200, JobSchema)
    def patch(self, data, job_id: UUID):
        """Change some fields of a job (owner or admin); 409 on a stale ``If-Match``/``version``."""
        version = _expected_version(data)
        return _with_etag(jobs.update_job(actor=current_actor(), job_id=job_id, data=data, partial=True,
                                          expected_version=version))

    @blp.response(200, JobSchema)
    def delete(self, job_id: UUID):
        """Delete a job: it fires nothing more, its history stays (owner or admin)."""
        return jobs.delete_job(actor=current_actor(), job_id=job_id, expected_version=_expected_version({}))


@blp.route("/<uuid:job_id>/run")
class JobRun(MethodView):
    @blp.doc(parameters=[IDEMPOTENCY_KEY_DOC])
    @idempotent
    @blp.response(202, ExecutionSchema)
    def post(self, job_id: UUID):
        """Run the job now; returns the queued execution (owner or admin). With an
        ``Idempotency-Key``, a retry of the same request returns the same execution."""
        return executions.trigger_manual_run(actor=current_actor(), job_id=job_id)


@blp.route("/<uuid:job_id>/pause")
class JobPause(MethodView):
    @blp.response(200, JobSchema)
    def post(self, job_id: UUID):
        """Pause the job: it fires nothing until resumed (owner or admin)."""
        return jobs.pause_job(actor=current_actor(), job_id=job_id)


@blp.route("/<uuid:job_id>/resume")
class JobResume(MethodView):
    @blp.response(200, JobSchema)
    def post(self, job_id: UUID):
        """Resume the job; the pause is replayed only if its misfire policy says so (owner or admin)."""
        job, _ = jobs.resume_job(actor=current_actor(), job_id=job_id)
        return job


@blp.route("/<uuid:job_id>/executions")
class JobExecutions(MethodView):
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
    @blp.arguments(JobMetricsQuerySchema, location="query")
    @blp.response(200, JobMetricsSchema)
    def get(self, query, job_id: UUID):
        """Runs by status, success rate, durations (p50, p95, max) and a per-day series over the last
        ``days`` days, 1 to 90 (whoever may see the job)."""
        return job_metrics.job_metrics(actor=current_actor(), job_id=job_id, days=query["days"])
