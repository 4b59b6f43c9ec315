"""``/api/v1/jobs``: create, list, read and run jobs (spec §5.1)."""

from __future__ import annotations

from uuid import UUID

from flask.views import MethodView
from flask_smorest import Blueprint

from app.api.auth import authenticate_request, current_actor
from app.api.schemas import ExecutionQuerySchema, ExecutionSchema, JobCreateSchema, JobSchema
from app.services import executions, jobs

blp = Blueprint("jobs", __name__, url_prefix="/api/v1/jobs", description="Jobs: what runs, and when")
blp.before_request(authenticate_request)


@blp.route("")
class Jobs(MethodView):
    @blp.response(200, JobSchema(many=True))
    @blp.paginate()
    def get(self, pagination_parameters):
        """List the jobs you may see, newest first (any role)."""
        found, total = jobs.list_jobs(actor=current_actor(), limit=pagination_parameters.page_size,
                                      offset=pagination_parameters.first_item)
        pagination_parameters.item_count = total
        return found

    @blp.arguments(JobCreateSchema)
    @blp.response(201, JobSchema)
    def post(self, data):
        """Create a job (role admin or job_creator)."""
        return jobs.create_job(actor=current_actor(), data=data)


@blp.route("/<uuid:job_id>")
class JobById(MethodView):
    @blp.response(200, JobSchema)
    def get(self, job_id: UUID):
        """A job's configuration (its owner, its team's viewers, admins)."""
        return jobs.get_job(actor=current_actor(), job_id=job_id)


@blp.route("/<uuid:job_id>/run")
class JobRun(MethodView):
    @blp.response(202, ExecutionSchema)
    def post(self, job_id: UUID):
        """Run the job now; returns the queued execution (owner or admin)."""
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
        """The job's executions and ledger records (skipped, missed), newest fire time first."""
        statuses = [s.strip() for s in query.get("status", "").split(",") if s.strip()]
        found, total = executions.list_job_executions(
            actor=current_actor(), job_id=job_id, limit=pagination_parameters.page_size,
            offset=pagination_parameters.first_item, statuses=statuses)
        pagination_parameters.item_count = total
        return found
