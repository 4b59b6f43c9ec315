"""The admin pages (/admin/users, /admin/teams, /admin/audit): what an admin changes through them
is changed and audited, refused input is shown beside its field and changes nothing, and anyone
else gets 403 from every one of them."""

from __future__ import annotations

import re
import uuid

import pytest
from sqlalchemy import func, select

from app.extensions import db
from app.models import AuditLog, Team, User
from app.services import teams
from app.services.actors import SYSTEM
from tests.conftest import ADMIN_TOKEN
from tests.ui.test_ui_route_inventory import SIGNED_IN
from tests.ui.web_client import csrf_of, make_user, signed_in

ADMIN_ROUTES = sorted((method, rule) for method, rule in SIGNED_IN if rule.startswith("/admin/"))


@pytest.fixture
def web(app, admin):
    """The bootstrap admin, signed in, and the CSRF token of their session."""
    client = signed_in(app, ADMIN_TOKEN)
    client.csrf = csrf_of(client.get("/admin/users").text)
    return client


def _post(web, path: str, **form):
    return web.post(path, data={"csrf_token": web.csrf, **form})


def _count(app, model, *where) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model).where(*where))


def _user(app, email: str) -> User:
    with app.app_context():
        user = db.session.scalar(select(User).where(User.email == email))
        db.session.expunge(user)
        return user


def _actions(app) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(AuditLog.action).order_by(AuditLog.id)))


def _team(app, name: str) -> uuid.UUID:
    with app.app_context():
        team = teams.create_team(actor=SYSTEM, name=name)
        db.session.commit()
        return team.id


# --- users -----------------------------------------------------------------------------------------

def test_an_admin_creates_a_user_with_a_role_and_a_team(app, web):
    # Given a team
    team_id = _team(app, "Data")
    # When the admin submits the new-user form
    response = _post(web, "/admin/users", email="nina@example.test", role="team_viewer", team_id=str(team_id))
    # Then the user exists with that role and team, the change is audited, and the list shows them
    assert response.status_code == 303
    nina = _user(app, "nina@example.test")
    assert (nina.role, nina.team_id, nina.is_active) == ("team_viewer", team_id, True)
    assert _actions(app)[-1] == "user_created"
    listing = web.get("/admin/users")
    assert "nina@example.test" in listing.text and "Created nina@example.test" in listing.text


@pytest.mark.parametrize("form, field, message", [
    ({"email": "not-an-email", "role": "job_creator"}, "email", "must be an email address"),
    ({"email": "TAKEN@example.test", "role": "job_creator"}, "email", "already exists"),
    ({"email": "x@example.test", "role": "boss"}, "role", "must be one of admin, job_creator, team_viewer"),
    ({"email": "x@example.test", "role": "job_creator", "team_id": "sales"}, "team_id", "must be a team from the list"),
    ({"email": "x@example.test", "role": "job_creator", "team_id": str(uuid.UUID(int=7))}, "team_id", "no team"),
])
def test_a_refused_new_user_is_shown_beside_its_field_and_nothing_is_created(app, web, form, field, message):
    # Given a user taken@example.test
    with app.app_context():
        make_user("taken@example.test", "job_creator")
        db.session.commit()
    users_before, audit_before = _count(app, User), _count(app, AuditLog)
    # When the admin submits a form with one bad field
    response = _post(web, "/admin/users", **form)
    # Then the page comes back with the error under that field and the input kept
    assert response.status_code == 422
    error = re.search(rf'<p class="field-error" id="{field}-error">([^<]*)</p>', response.text)
    assert error and message in error.group(1)
    assert f'id="{field}"' in response.text and 'aria-invalid="true" aria-describedby="' + field in response.text
    assert f'value="{form["email"]}"' in response.text
    # And nothing changed
    assert (_count(app, User), _count(app, AuditLog)) == (users_before, audit_before)


def test_an_admin_changes_a_role_and_a_team(app, web):
    # Given Omar, a job creator with no team, and a team
    with app.app_context():
        omar, _ = make_user("omar@example.test", "job_creator")
        db.session.commit()
        omar_id = omar.id
    team_id = _team(app, "Ops")
    # When the admin makes him a team viewer in Ops
    response = _post(web, f"/admin/users/{omar_id}", role="team_viewer", team_id=str(team_id), page="1")
    # Then he is, and one audit row says what changed
    assert response.status_code == 303
    omar = _user(app, "omar@example.test")
    assert (omar.role, omar.team_id) == ("team_viewer", team_id)
    with app.app_context():
        row = db.session.scalars(select(AuditLog).order_by(AuditLog.id.desc()).limit(1)).one()
        assert (row.action, set(row.changes)) == ("user_updated", {"role", "team_id"})
    # When he is taken out of the team, keeping his role
    assert _post(web, f"/admin/users/{omar_id}", role="team_viewer", team_id="").status_code == 303
    assert _user(app, "omar@example.test").team_id is None


def test_a_refused_change_is_shown_on_the_user_s_row_and_changes_nothing(app, web):
    admin_id = _user(app, "admin").id
    audit_before = _count(app, AuditLog)
    # When the only admin tries to make themselves a job creator
    response = _post(web, f"/admin/users/{admin_id}", role="job_creator", team_id="")
    # Then it is refused on their row, saying what to do, and they stay admin
    assert response.status_code == 409
    assert re.search(rf'id="u-{admin_id}-role-error">this is the last active admin; make another user admin first<',
                     response.text)
    # And a role that does not exist is refused on the row too
    bad = _post(web, f"/admin/users/{admin_id}", role="root", team_id="")
    assert bad.status_code == 422 and f'id="u-{admin_id}-role-error">must be one of' in bad.text
    assert _user(app, "admin").role == "admin" and _count(app, AuditLog) == audit_before


def test_an_admin_disables_and_enables_a_user(app, web):
    with app.app_context():
        pia, pia_token = make_user("pia@example.test", "job_creator")
        db.session.commit()
        pia_id = pia.id
    # When the admin disables Pia
    assert _post(web, f"/admin/users/{pia_id}/active", is_active="false").status_code == 303
    # Then she is disabled and can no longer sign in; the change is audited
    assert _user(app, "pia@example.test").is_active is False
    assert _actions(app)[-1] == "user_updated"
    login = app.test_client().get("/login")
    refused = app.test_client().post("/login/token", data={"token": pia_token, "csrf_token": csrf_of(login.text)})
    assert refused.status_code not in (302, 303)
    # When the admin enables her again, then she is active
    assert _post(web, f"/admin/users/{pia_id}/active", is_active="true").status_code == 303
    assert _user(app, "pia@example.test").is_active is True
    # And a value other than the buttons' is refused, naming the field
    bad = _post(web, f"/admin/users/{pia_id}/active", is_active="maybe")
    assert bad.status_code == 422 and f'id="u-{pia_id}-is_active-error">must be true (enable) or false' in bad.text


def test_the_user_list_is_paged(app, web):
    # Given 60 users besides the admin
    with app.app_context():
        for n in range(60):
            make_user(f"user{n:02d}@example.test", "team_viewer")
        db.session.commit()
    # When the admin opens the first and the second page
    first, second = web.get("/admin/users"), web.get("/admin/users?page=2")
    # Then the first shows 50, the second the other 11, with the way back
    assert first.text.count('<tr id="user-') == 50 and "page 1 of 2" in first.text
    assert second.text.count('<tr id="user-') == 11 and "Previous" in second.text
    assert "user59@example.test" in second.text and "user59@example.test" not in first.text
    # And a refused change to a user on page 2 comes back on page 2, beside that user's role
    user59 = _user(app, "user59@example.test")
    refused = _post(web, f"/admin/users/{user59.id}", role="root", team_id="", page="2")
    assert refused.status_code == 422 and f'id="u-{user59.id}-role-error">must be one of' in refused.text


# --- teams -----------------------------------------------------------------------------------------

def test_an_admin_creates_renames_and_deletes_a_team(app, web):
    # When the admin creates a team
    assert _post(web, "/admin/teams", name="  Platform ").status_code == 303
    with app.app_context():
        team_id = db.session.scalar(select(Team.id).where(Team.name == "Platform"))
        member, _ = make_user("quinn@example.test", "team_viewer", team_id=team_id)
        db.session.commit()
    assert "Platform" in web.get("/admin/teams").text
    # When they rename it
    assert _post(web, f"/admin/teams/{team_id}/rename", name="Platform Eng").status_code == 303
    assert _count(app, Team, Team.name == "Platform Eng") == 1
    # When they delete it
    response = _post(web, f"/admin/teams/{team_id}/delete")
    # Then it is gone, its member stays with no team, and all three changes are audited
    assert response.status_code == 303 and _count(app, Team) == 0
    assert _user(app, "quinn@example.test").team_id is None
    assert [action for action in _actions(app) if action.startswith("team_")] == [
        "team_created", "team_renamed", "team_deleted"]


@pytest.mark.parametrize("name, message", [("", "is required"), ("data", "already exists"), ("x" * 256, "1 to 255")])
def test_a_refused_team_name_is_shown_beside_the_field_and_nothing_changes(app, web, name, message):
    # Given a team named Data
    team_id = _team(app, "Data")
    audit_before = _count(app, AuditLog)
    # When the admin creates a team with a bad name, then it is refused under the name field
    created = _post(web, "/admin/teams", name=name)
    assert created.status_code == 422
    assert re.search(rf'id="name-error">[^<]*{message}', created.text)
    # When the admin renames another team to that name, then it is refused on that team's row
    other = _team(app, "Other")
    renamed = _post(web, f"/admin/teams/{other}/rename", name=name)
    assert renamed.status_code == 422 and re.search(rf'id="t-{other}-name-error">[^<]*{message}', renamed.text)
    # And nothing changed but the second team this test made
    assert _count(app, Team) == 2 and _count(app, Team, Team.id == team_id, Team.name == "Data") == 1
    assert _count(app, AuditLog) == audit_before + 1


def test_deleting_a_team_that_is_gone_says_not_found(app, web):
    assert _post(web, f"/admin/teams/{uuid.uuid4()}/delete").status_code == 404


# --- audit log -------------------------------------------------------------------------------------

def test_the_audit_log_lists_the_changes_newest_first_and_filters_them(app, web):
    # Given a team and a user the admin made through the pages, and a user Jobplane made
    _post(web, "/admin/teams", name="Audit team")
    _post(web, "/admin/users", email="rae@example.test", role="job_creator")
    with app.app_context():
        make_user("sys@example.test", "job_creator")
        db.session.commit()
    # When the admin opens the audit log
    page = web.get("/admin/audit")
    # Then it lists every row, newest first
    assert page.status_code == 200
    actions = re.findall(r'<td class="mono">([a-z_]+)</td>', page.text)
    assert actions == list(reversed(_actions(app)))
    # When they filter by actor, action and resource type
    by_admin = web.get("/admin/audit?email=ADMIN&resource_type=user")
    assert re.findall(r'<td class="mono">([a-z_]+)</td>', by_admin.text) == ["user_created", "login_succeeded"]
    assert re.findall(r'<td class="mono">([a-z_]+)</td>', web.get("/admin/audit?action=team_created").text) == \
        ["team_created"]
    # And by time: nothing is older than the start of this test's year, everything is since then
    assert "No audit entries match." in web.get("/admin/audit?until=2000-01-01").text
    assert web.get("/admin/audit?since=2000-01-01T00:00").text.count('<td class="mono">') == len(_actions(app))


@pytest.mark.parametrize("query, field", [("since=yesterday", "since"), ("until=2026-13-01", "until"),
                                          ("since=2026-11-02&until=2026-11-01", "until")])
def test_a_bad_time_filter_is_shown_beside_its_field(app, web, query, field):
    response = web.get(f"/admin/audit?{query}")
    assert response.status_code == 422
    assert re.search(rf'id="{field}-error">(must be a date|must be after From)', response.text)


def test_the_chain_is_verified_when_asked(app, web):
    _post(web, "/admin/teams", name="Chained")
    page = web.get("/admin/audit")
    assert 'id="chain-status"' not in page.text  # walking the chain is not free: only when asked
    verified = web.get("/admin/audit?verify=1")
    assert re.search(r'id="chain-status" role="status">The chain is whole: \d+ rows checked', verified.text)


# --- who may use them ------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ["job_creator", "team_viewer"])
def test_anyone_but_an_admin_gets_403_from_every_admin_route_and_sees_no_admin_links(app, admin, role):
    # Given a signed-in job creator or team viewer, and a user and a team to aim at
    with app.app_context():
        target, _ = make_user("target@example.test", "job_creator")
        _, token = make_user("someone@example.test", role)
        team = teams.create_team(actor=SYSTEM, name="Target team")
        db.session.commit()
        ids = {"user_id": str(target.id), "team_id": str(team.id)}
    web = signed_in(app, token)
    csrf = csrf_of(web.get("/dashboard").text)
    audit_before = _count(app, AuditLog)
    # When they try every admin route, with valid input
    for method, rule in ADMIN_ROUTES:
        path = re.sub(r"<uuid:(\w+)>", lambda m: ids[m.group(1)], rule)
        form = {"csrf_token": csrf, "email": "new@example.test", "role": "admin", "team_id": "", "name": "Renamed",
                "is_active": "false"}
        response = web.open(path, method=method, data=form if method == "POST" else None)
        # Then each one is refused
        assert response.status_code == 403, (method, rule)
    # And nothing changed
    assert _count(app, AuditLog) == audit_before and _count(app, User, User.email == "new@example.test") == 0
    assert _user(app, "target@example.test").is_active and _count(app, Team, Team.name == "Target team") == 1
    # And their pages show no admin links
    page = web.get("/dashboard")
    assert "/admin/" not in page.text and "/admin/" not in web.get("/jobs").text
    assert len(ADMIN_ROUTES) == 9
