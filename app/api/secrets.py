"""``/api/v1/jobs/{id}/secrets``: set, list and delete a job's secrets. Values are write-only."""

from __future__ import annotations

from uuid import UUID

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from app.api.auth import authenticate_request, current_actor
from app.api.openapi import documented
from app.services import secrets

blp = Blueprint("secrets", __name__, url_prefix="/api/v1/jobs",
                description="Job secrets: given to each run as environment variables; values are never returned")
blp.before_request(authenticate_request)


class SecretValueSchema(Schema):
    value = fields.String(required=True, metadata={
        "description": "the value (write-only: no response ever contains it)", "example": "s3cr3t"})


class SecretSchema(Schema):
    name = fields.String(metadata={"example": "DB_PASSWORD"})
    created_at = fields.DateTime()
    updated_at = fields.DateTime(metadata={"description": "when the value was last set"})


@blp.route("/<uuid:job_id>/secrets")
class JobSecrets(MethodView):
    @documented(blp, requires="admin, the job's owner, or a team_viewer of the job's team", errors=(404,))
    @blp.response(200, SecretSchema(many=True))
    def get(self, job_id: UUID):
        """The names of the job's secrets, never their values (whoever may see the job)."""
        return secrets.list_secrets(actor=current_actor(), job_id=job_id)


@blp.route("/<uuid:job_id>/secrets/<string:name>")
class JobSecretByName(MethodView):
    @documented(blp, requires="job_creator (own jobs) or admin", errors=(403, 404, 409))
    @blp.arguments(SecretValueSchema, example={"value": "s3cr3t"})
    @blp.response(200, SecretSchema, description="the value was replaced")
    @blp.alt_response(201, schema=SecretSchema, description="the secret was created")
    def put(self, data, job_id: UUID, name: str):
        """Set a secret: create it (201) or replace its value (200). Owner or admin."""
        secret, created = secrets.set_secret(actor=current_actor(), job_id=job_id, name=name, value=data["value"])
        return secret, 201 if created else 200

    @documented(blp, requires="job_creator (own jobs) or admin", errors=(403, 404))
    @blp.response(204)
    def delete(self, job_id: UUID, name: str):
        """Delete a secret and its value. Owner or admin."""
        secrets.delete_secret(actor=current_actor(), job_id=job_id, name=name)
