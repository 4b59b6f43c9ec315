"""``/api/v1/teams``: the teams users belong to; team viewers see their team's jobs (admins)."""

from __future__ import annotations

from uuid import UUID

from flask.views import MethodView

from app.api.auth import authenticate_request, current_actor
from app.api.identity_schemas import TeamListQuerySchema, TeamSchema, TeamWriteSchema
from app.api.pagination import Blueprint
from app.services import teams

blp = Blueprint("teams", __name__, url_prefix="/api/v1/teams", description="Teams (admins)")
blp.before_request(authenticate_request)


@blp.route("")
class Teams(MethodView):
    @blp.arguments(TeamListQuerySchema, location="query")
    @blp.response(200, TeamSchema(many=True))
    @blp.paginate()
    def get(self, query, pagination_parameters):
        """Every team, by name (admin); q: a part of the name."""
        found, pagination_parameters.item_count = teams.list_teams_page(
            actor=current_actor(), limit=pagination_parameters.page_size, offset=pagination_parameters.first_item,
            search=query.get("q"))
        return found

    @blp.arguments(TeamWriteSchema)
    @blp.response(201, TeamSchema)
    def post(self, data):
        """Create a team (admin)."""
        return teams.create_team(actor=current_actor(), name=data["name"])


@blp.route("/<uuid:team_id>")
class TeamById(MethodView):
    @blp.response(200, TeamSchema)
    def get(self, team_id: UUID):
        """A team (admin, or a member)."""
        return teams.get_team(actor=current_actor(), team_id=team_id)

    @blp.arguments(TeamWriteSchema)
    @blp.response(200, TeamSchema)
    def patch(self, data, team_id: UUID):
        """Rename a team (admin)."""
        return teams.rename_team(actor=current_actor(), team_id=team_id, name=data["name"])

    @blp.response(204)
    def delete(self, team_id: UUID):
        """Delete a team; its members and jobs stay, without a team (admin)."""
        teams.delete_team(actor=current_actor(), team_id=team_id)
