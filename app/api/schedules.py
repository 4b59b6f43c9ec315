"""``/api/v1/schedules``: check a cron schedule before giving it to a job."""

from __future__ import annotations

from datetime import UTC

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from app.api.auth import authenticate_request
from app.api.openapi import documented
from app.services import schedules

blp = Blueprint("schedules", __name__, url_prefix="/api/v1/schedules",
                description="Schedules: what a cron expression means and when it fires")
blp.before_request(authenticate_request)


class SchedulePreviewArgsSchema(Schema):
    # Only types here: the limits (count 1-50, cron syntax, zone names) are the service's, so the
    # CLI and UI get the same messages.
    schedule = fields.String(required=True, metadata={
        "description": "cron: 5 fields, or 6 with leading seconds, or a macro such as @daily",
        "example": "30 2 * * *"})
    timezone = fields.String(load_default="UTC", metadata={
        "description": "IANA timezone of the schedule", "example": "America/New_York"})
    count = fields.Integer(load_default=5, metadata={
        "description": f"how many fire times, 1 to {schedules.MAX_PREVIEW_COUNT}", "example": 5})
    after = fields.AwareDateTime(load_default=None, default_timezone=UTC, metadata={
        "description": "list fire times strictly after this instant (default: now; UTC if no offset)",
        "example": "2026-03-07T00:00:00Z"})


class FireTimeSchema(Schema):
    local = fields.String(metadata={"description": "ISO 8601, in the schedule's timezone",
                                    "example": "2026-03-08T03:00:00-04:00"})
    utc = fields.String(metadata={"description": "ISO 8601, in UTC", "example": "2026-03-08T07:00:00+00:00"})
    dst_note = fields.String(allow_none=True, metadata={
        "description": "set when a daylight saving change moves this run or is within a day of it",
        "example": "02:30 does not exist (clocks spring forward from 02:00 to 03:00 on 2026-03-08); "
                   "runs at 03:00"})


class SchedulePreviewSchema(Schema):
    schedule = fields.String()
    timezone = fields.String()
    description = fields.String(metadata={"description": "the schedule in words, 24-hour clock",
                                          "example": "At 02:30"})
    fire_times = fields.List(fields.Nested(FireTimeSchema))


@blp.route("/preview")
class SchedulePreview(MethodView):
    @documented(blp, requires="any role")
    @blp.arguments(SchedulePreviewArgsSchema, location="query")
    @blp.response(200, SchedulePreviewSchema)
    def get(self, args):
        """The next fire times of a schedule, with notes where daylight saving time moves them (any role)."""
        return schedules.preview(**args)
