"""``/api/v1/users`` (admins) and ``/api/v1/me``: users, roles, teams of users, GDPR export and
deletion (spec §5.6, §9.1, §9.5)."""

from __future__ import annotations

from uuid import UUID

from flask import current_app
from flask.views import MethodView

from app.api.auth import authenticate_request, current_actor
from app.api.identity_schemas import (UserCreateSchema, UserDeletedSchema, UserExportSchema, UserListQuerySchema,
                                      UserSchema, UserUpdateSchema)
from app.api.pagination import Blueprint
from app.services import privacy, users

blp = Blueprint("users", __name__, url_prefix="/api/v1", description="Users and roles (admins), and yourself")
blp.before_request(authenticate_request)


@blp.route("/users")
class Users(MethodView):
    @blp.arguments(UserListQuerySchema, location="query")
    @blp.response(200, UserSchema(many=True))
    @blp.paginate()
    def get(self, query, pagination_parameters):
        """Every user, by email (admin); filter by role, team and q (part of the email or name)."""
        found, total = users.list_users(actor=current_actor(), limit=pagination_parameters.page_size,
                                        offset=pagination_parameters.first_item, role=query.get("role"),
                                        team_id=query.get("team"), search=query.get("q"), sort=query["sort"])
        pagination_parameters.item_count = total
        return found

    @blp.arguments(UserCreateSchema)
    @blp.response(201, UserSchema)
    def post(self, data):
        """Create a user with a role, ahead of their first sign-in (admin)."""
        issuer = current_app.config.get("OIDC_ISSUER")
        return users.create_user(actor=current_actor(), oidc_issuer=issuer.rstrip("/") if issuer else None, **data)


@blp.route("/users/<uuid:user_id>")
class UserById(MethodView):
    @blp.response(200, UserSchema)
    def get(self, user_id: UUID):
        """A user (admin, or the user themself)."""
        return users.get_user(actor=current_actor(), user_id=user_id)

    @blp.arguments(UserUpdateSchema)
    @blp.response(200, UserSchema)
    def patch(self, data, user_id: UUID):
        """Change a user's role, team, active flag or name (admin; never the last admin's role)."""
        return users.update_user(actor=current_actor(), user_id=user_id, changes=data)

    @blp.response(200, UserDeletedSchema)
    def delete(self, user_id: UUID):
        """Delete a user with their jobs and executions; the audit trail keeps a pseudonymous id (admin)."""
        return privacy.delete_user(actor=current_actor(), user_id=user_id)


@blp.route("/users/<uuid:user_id>/export")
class UserExport(MethodView):
    @blp.response(200, UserExportSchema)
    def get(self, user_id: UUID):
        """Everything Jobplane holds about a user, for a data subject access request (admin, or themself)."""
        return privacy.export_user(actor=current_actor(), user_id=user_id)


@blp.route("/me")
class Me(MethodView):
    @blp.response(200, UserSchema)
    def get(self):
        """Who you are: your user, role and team (any role)."""
        return current_actor().user


@blp.route("/me/export")
class MyExport(MethodView):
    @blp.response(200, UserExportSchema)
    def get(self):
        """Everything Jobplane holds about you (any role)."""
        actor = current_actor()
        return privacy.export_user(actor=actor, user_id=actor.user.id)
