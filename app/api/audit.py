"""``/api/v1/audit-logs``: the audit trail, filtered, as JSON or CSV (admins)."""

from __future__ import annotations

from flask import Response, stream_with_context
from flask.views import MethodView

from app.api.auth import authenticate_request, current_actor
from app.api.identity_schemas import AuditLogSchema, AuditQuerySchema
from app.api.pagination import Blueprint
from app.services import audit_trail

blp = Blueprint("audit", __name__, url_prefix="/api/v1/audit-logs", description="The audit trail (admins)")
blp.before_request(authenticate_request)


@blp.route("")
class AuditLogs(MethodView):
    @blp.arguments(AuditQuerySchema, location="query")
    @blp.response(200, AuditLogSchema(many=True))
    @blp.alt_response(200, description="with format=csv: the rows as CSV, oldest first",
                      content_type="text/csv", success=True)
    @blp.paginate()
    def get(self, query, pagination_parameters):
        """Audit rows, newest first; filter by user_id, action, resource_type, resource_id, since, until
        (admin). ``format=csv`` exports every matching row."""
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
