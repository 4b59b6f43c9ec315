"""``/api/v1/jobs/{id}/notifications``: how a job's notifications went, and a test notification."""

from __future__ import annotations

from uuid import UUID

from flask.views import MethodView
from marshmallow import Schema, fields

from app.api.auth import authenticate_request, current_actor
from app.api.pagination import Blueprint
from app.services import notifications

blp = Blueprint("notifications", __name__, url_prefix="/api/v1/jobs",
                description="Notifications of a job: deliveries and a test")
blp.before_request(authenticate_request)


class NotificationSchema(Schema):
    id = fields.UUID()
    execution_id = fields.UUID(allow_none=True)
    event = fields.String()
    channel = fields.String(metadata={"enum": ["email", "slack", "webhook"]})
    status = fields.String(metadata={"enum": ["pending", "sending", "sent", "failed", "fallback"]})
    attempts = fields.Integer()
    next_attempt_at = fields.DateTime()
    last_error = fields.String(allow_none=True)
    fallback_of = fields.UUID(allow_none=True)
    created_at = fields.DateTime()
    sent_at = fields.DateTime(allow_none=True)


@blp.route("/<uuid:job_id>/notifications")
class JobNotifications(MethodView):
    @blp.response(200, NotificationSchema(many=True))
    @blp.paginate()
    def get(self, job_id: UUID, pagination_parameters):
        """The job's notifications, newest first, and their delivery (whoever may see the job)."""
        found, pagination_parameters.item_count = notifications.list_job_notifications(
            actor=current_actor(), job_id=job_id, limit=pagination_parameters.page_size,
            offset=pagination_parameters.first_item)
        return found


@blp.route("/<uuid:job_id>/notifications/test")
class JobNotificationTest(MethodView):
    @blp.response(202, NotificationSchema(many=True))
    def post(self, job_id: UUID):
        """Send a test notification through each configured channel (owner or admin)."""
        return notifications.send_test(actor=current_actor(), job_id=job_id)
