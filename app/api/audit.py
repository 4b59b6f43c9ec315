"""``/api/v1/audit-logs``: the audit trail, filtered, as JSON or CSV (admins)."""

from __future__ import annotations

from flask import Response, stream_with_context
from flask.views import MethodView

from app.api.auth import authenticate_request, current_actor
from app.api.identity_schemas import AuditLogSchema, AuditQuerySchema
from app.api.openapi import documented
from app.api.pagination import Blueprint
from app.services import audit_trail

blp = Blueprint("audit", __name__, url_prefix="/api/v1/audit-logs", description="The audit trail (admins)")
blp.before_request(authenticate_request)


@blp.route("")
class AuditLogs(MethodView):
    @documented(blp, requires="admin", errors=(403,))
    @blp.arguments(AuditQuerySchema, location="query")
    @blp.response(200, AuditLogSchema(many=True))
    # The CSV is a second content type of the same 200 (a second response for one status is dropped
    # from the document, and clients would not know the CSV exists)
    @blp.doc(responses={200: {"content": {"text/csv": {
        "schema": {"type": "string"}, "example": "id,created_at,user_id,email,action,...\n"}}}})
    @blp.paginate()
    def get(self, query, pagination_parameters):
        """Audit rows, newest first, filtered (admin).

        Filter by user_id or actor (a user id or email), action, resource_type, resource_id, since,
        until. ``format=csv`` exports every matching row.
        """
        query = dict(query)
        if query.pop("format", "json") == "csv":
            rows = audit_trail.export_csv(actor=current_actor(), filters=query)
            # the export holds every matching row, whatever the page; the header gives their count
            _, pagination_parameters.item_count = audit_trail.list_entries(actor=current_actor(), filters=query,
                                                                           limit=0)
            return Response(stream_with_context(rows), mimetype="text/csv",
                            headers={"Content-Disposition": "attachment; filename=audit-log.csv"})
        found, total = audit_trail.list_entries(actor=current_actor(), filters=query,
                                                limit=pagination_parameters.page_size,
                                                offset=pagination_parameters.first_item)
        pagination_parameters.item_count = total
        return found
