"""``/api/v1/executions``: one run's status, timings and log (spec §5.1)."""

from __future__ import annotations

from uuid import UUID

from flask import Response
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from app.api.auth import authenticate_request, current_actor
from app.api.openapi import documented
from app.api.schemas import ExecutionDetailSchema, ExecutionSchema
from app.services import executions

blp = Blueprint("executions", __name__, url_prefix="/api/v1/executions",
                description="Executions: one run of a job")
blp.before_request(authenticate_request)


@blp.route("/<uuid:execution_id>")
class ExecutionById(MethodView):
    @documented(blp, requires="admin, the job's owner, or a team_viewer of the job's team", errors=(404,))
    @blp.response(200, ExecutionDetailSchema)
    def get(self, execution_id: UUID):
        """An execution with its log (anyone who may see its job)."""
        execution = executions.get_execution(actor=current_actor(), execution_id=execution_id)
        execution.logs = executions.read_log(execution_id=execution.id)
        return execution


class LogRangeArgsSchema(Schema):
    # Only types here: the limits are the service's, so the CLI gets the same messages.
    offset = fields.Integer(metadata={
        "description": "first byte to read (default 0); a position inside a character moves to the next one",
        "example": 0})
    limit = fields.Integer(metadata={
        "description": f"most bytes to return, {executions.LOG_RANGE_MIN_BYTES} to "
                       f"{executions.LOG_RANGE_MAX_BYTES} (default {executions.LOG_RANGE_DEFAULT_BYTES})",
        "example": executions.LOG_RANGE_DEFAULT_BYTES})
    tail = fields.Integer(metadata={
        "description": f"instead of offset and limit: the last this many bytes, 1 to {executions.LOG_RANGE_MAX_BYTES}",
        "example": 4096})


_INTEGER = {"type": "integer"}
LOG_HEADERS = {
    "X-Log-Size": {"description": "bytes in the stored log so far", "schema": _INTEGER},
    "X-Log-Offset": {"description": "byte position of the first byte returned", "schema": _INTEGER},
    "X-Next-Offset": {"description": "where to read on from (the offset of the next request)", "schema": _INTEGER},
    "X-Log-Truncated": {"description": "true when the log reached its cap (JOBPLANE_LOG_CAP_BYTES) and the "
                                       "rest of the output was not kept", "schema": {"type": "boolean"}},
}


@blp.route("/<uuid:execution_id>/log")
class ExecutionLog(MethodView):
    @documented(blp, requires="admin, the job's owner, or a team_viewer of the job's team", errors=(404,))
    @blp.arguments(LogRangeArgsSchema, location="query", as_kwargs=True)
    @blp.response(200, content_type="text/plain", headers=LOG_HEADERS,
                  description="the stored log's bytes in the range, as UTF-8 text",
                  example="Starting export\nexported 1200 rows\n")
    def get(self, execution_id: UUID, **log_range):
        """A byte range of an execution's stored log, for large logs (anyone who may see its job).

        ``offset`` and ``limit`` (or ``tail``) are byte positions; the range is cut on character
        boundaries, never inside a UTF-8 character, so it may be up to 3 bytes shorter at each end.
        Follow a running execution by asking again from ``X-Next-Offset``.
        """
        piece = executions.read_log_range(actor=current_actor(), execution_id=execution_id, **log_range)
        return Response(piece.data, content_type="text/plain; charset=utf-8", headers={
            "X-Log-Size": str(piece.size), "X-Log-Offset": str(piece.start),
            "X-Next-Offset": str(piece.next_offset), "X-Log-Truncated": "true" if piece.truncated else "false"})


@blp.route("/<uuid:execution_id>/cancel")
class ExecutionCancel(MethodView):
    @documented(blp, requires="job_creator (own jobs) or admin", errors=(403, 404, 409))
    @blp.response(200, ExecutionSchema)
    def post(self, execution_id: UUID):
        """Cancel a queued or running execution: no process of it survives (owner or admin).

        A running one is stopped at its worker's next heartbeat: SIGTERM, the grace period,
        SIGKILL of its process group. 409 if it has already ended.
        """
        return executions.cancel_execution(actor=current_actor(), execution_id=execution_id)
