"""The job list and a job's detail agree on what a user may see."""

from __future__ import annotations

from app.extensions import db
from app.models import Team
from app.services import jobs
from app.services.actors import Actor
from tests.secrets.helpers import make_job, make_user


def test_a_team_viewer_lists_their_own_old_jobs_as_well_as_their_teams(app):
    with app.app_context():
        team, other = Team(name="data"), Team(name="web")
        db.session.add_all([team, other])
        db.session.flush()
        maya, _ = make_user("maya@example.test", "job_creator", other.id)
        mine = make_job(Actor(user=maya), name="made-before-moving")
        colleague, _ = make_user("ravi@example.test", "job_creator", team.id)
        theirs = make_job(Actor(user=colleague), name="team-job")
        make_job(Actor(user=make_user("x@example.test", "job_creator", other.id)[0]), name="not-visible")
        maya.role, maya.team_id = "team_viewer", team.id  # moved to a viewer seat in another team
        db.session.flush()
        listed, total = jobs.list_jobs(actor=Actor(user=maya))
        assert {job.name for job in listed} == {"made-before-moving", "team-job"} and total == 2
        for job in (mine, theirs):
            assert jobs.get_job(actor=Actor(user=maya), job_id=job.id).id == job.id
