"""``/api/v1/tokens``: your personal API tokens (any role)."""

from __future__ import annotations

from uuid import UUID

from flask.views import MethodView

from app.api.auth import authenticate_request, current_actor
from app.api.identity_schemas import NewTokenSchema, TokenCreateSchema, TokenSchema
from app.api.pagination import Blueprint
from app.services import api_tokens

blp = Blueprint("tokens", __name__, url_prefix="/api/v1/tokens", description="Your personal API tokens")
blp.before_request(authenticate_request)


@blp.route("")
class Tokens(MethodView):
    @blp.response(200, TokenSchema(many=True))
    @blp.paginate()
    def get(self, pagination_parameters):
        """Your tokens, newest first: names, prefixes and dates, never the tokens themselves."""
        found, pagination_parameters.item_count = api_tokens.list_own_tokens_page(
            actor=current_actor(), limit=pagination_parameters.page_size, offset=pagination_parameters.first_item)
        return found

    @blp.arguments(TokenCreateSchema)
    @blp.response(201, NewTokenSchema)
    def post(self, data):
        """Create a token for yourself; the response holds it, once (any role)."""
        row, plain = api_tokens.issue_own_token(actor=current_actor(), name=data["name"],
                                                expires_in_days=data.get("expires_in_days"))
        row.token = plain
        return row


@blp.route("/<uuid:token_id>")
class TokenById(MethodView):
    @blp.response(200, TokenSchema)
    def delete(self, token_id: UUID):
        """Revoke a token at once: your own, or anyone's for an admin."""
        return api_tokens.revoke_token(actor=current_actor(), token_id=token_id)
