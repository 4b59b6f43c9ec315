"""Schemas of the identity endpoints: users, teams, tokens, the audit log."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from app.models.user import ROLES


class UserSchema(Schema):
    id = fields.UUID()
    email = fields.String()
    display_name = fields.String(allow_none=True)
    role = fields.String(metadata={"enum": list(ROLES)})
    team_id = fields.UUID(allow_none=True)
    is_active = fields.Boolean()
    oidc_subject = fields.String(allow_none=True)
    created_at = fields.DateTime()
    last_login_at = fields.DateTime(allow_none=True)


class UserCreateSchema(Schema):
    email = fields.String(required=True, metadata={"example": "maya@example.com"})
    role = fields.String(required=True, metadata={"enum": list(ROLES), "example": "job_creator"})
    team_id = fields.UUID(allow_none=True)
    display_name = fields.String(allow_none=True, validate=validate.Length(max=255))
    oidc_subject = fields.String(allow_none=True, metadata={
        "description": "link to a single sign-on identity (its sub claim) before its first sign-in, "
                       "e.g. a pipeline's service principal"})


class UserUpdateSchema(Schema):
    role = fields.String(metadata={"enum": list(ROLES)})
    team_id = fields.UUID(allow_none=True)
    is_active = fields.Boolean()
    display_name = fields.String(allow_none=True, validate=validate.Length(max=255))


class UserListQuerySchema(Schema):
    role = fields.String(metadata={"enum": list(ROLES)})
    team = fields.UUID(metadata={"description": "the team's id"})
    q = fields.String(validate=validate.Length(max=255),
                      metadata={"description": "a part of the email or display name, in any case"})
    sort = fields.String(load_default="email", metadata={
        "description": "email, created_at, last_login_at or role; a leading - for descending (default email); "
                       "ties are broken by id"})


class TeamListQuerySchema(Schema):
    q = fields.String(validate=validate.Length(max=255), metadata={"description": "a part of the name, in any case"})


class TeamSchema(Schema):
    id = fields.UUID()
    name = fields.String()
    created_at = fields.DateTime()


class TeamWriteSchema(Schema):
    name = fields.String(required=True, metadata={"example": "data-engineering"})


class TokenSchema(Schema):
    id = fields.UUID()
    name = fields.String()
    prefix = fields.String(metadata={"description": "the token's first characters, to tell tokens apart"})
    created_at = fields.DateTime()
    expires_at = fields.DateTime(allow_none=True)
    last_used_at = fields.DateTime(allow_none=True)
    revoked_at = fields.DateTime(allow_none=True)


class NewTokenSchema(TokenSchema):
    token = fields.String(metadata={"description": "the token itself: shown this once, never again"})


class TokenCreateSchema(Schema):
    name = fields.String(required=True, metadata={"example": "airflow-prod"})
    expires_in_days = fields.Integer(allow_none=True, strict=True,
                                     metadata={"description": "1 to 365; default 90"})


class AuditLogSchema(Schema):
    id = fields.Integer()
    created_at = fields.DateTime()
    user_id = fields.UUID(allow_none=True)
    email = fields.String(allow_none=True)
    action = fields.String()
    resource_type = fields.String()
    resource_id = fields.String()
    changes = fields.Dict(allow_none=True)
    ip_address = fields.String(allow_none=True)
    user_agent = fields.String(allow_none=True)
    request_id = fields.String(allow_none=True)
    row_hash = fields.String()


class AuditQuerySchema(Schema):
    user_id = fields.UUID()
    action = fields.String()
    resource_type = fields.String()
    resource_id = fields.String()
    since = fields.AwareDateTime()
    until = fields.AwareDateTime()
    format = fields.String(validate=validate.OneOf(["json", "csv"]), metadata={"description": "csv to export"})


class UserExportSchema(Schema):
    user = fields.Dict()
    team = fields.Dict(allow_none=True)
    api_tokens = fields.List(fields.Dict())
    jobs = fields.List(fields.Dict())
    executions = fields.List(fields.Dict())
    audit_logs = fields.List(fields.Dict())


class UserDeletedSchema(Schema):
    jobs = fields.Integer()
    executions = fields.Integer()
    audit_rows_pseudonymized = fields.Integer()
