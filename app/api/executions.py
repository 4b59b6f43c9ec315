"""``/api/v1/executions``: one run's status, timings and log (spec §5.1)."""

from __future__ import annotations

from uuid import UUID

from flask.views import MethodView
from flask_smorest import Blueprint

from app.api.auth import authenticate_request, current_actor
from app.api.schemas import ExecutionDetailSchema, ExecutionSchema
from app.services import executions

blp = Blueprint("executions", __name__, url_prefix="/api/v1/executions",
                description="Executions: one run of a job")
blp.before_request(authenticate_request)


@blp.route("/<uuid:execution_id>")
class ExecutionById(MethodView):
    @blp.response(200, ExecutionDetailSchema)
    def get(self, execution_id: UUID):
        """An execution with its log (anyone who may see its job)."""
        execution = executions.get_execution(actor=current_actor(), execution_id=execution_id)
        execution.logs = executions.read_log(execution_id=execution.id)
        return execution


@blp.route("/<uuid:execution_id>/cancel")
class ExecutionCancel(MethodView):
    @blp.response(200, ExecutionSchema)
    def post(self, execution_id: UUID):
        """Cancel a queued or running execution: no process of it survives (owner or admin).

        A running one is stopped at its worker's next heartbeat: SIGTERM, the grace period,
        SIGKILL of its process group. 409 if it has already ended.
        """
        return executions.cancel_execution(actor=current_actor(), execution_id=execution_id)
