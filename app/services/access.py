"""Who may do what: the spec's permission matrix (§9.1), in one place.

| action                                   | admin | job_creator | team_viewer          |
| create a job                             | yes   | yes         | no                   |
| view own jobs, their runs and logs       | yes   | yes         | -                    |
| edit, delete, pause, resume, run own jobs| yes   | yes         | no                   |
| view team jobs, their runs and logs      | yes   | no          | yes (read-only)      |
| view all jobs                            | yes   | no          | no                   |
| manage users, roles, teams               | yes   | no          | no                   |
| view the audit log                       | yes   | no          | no                   |
| own profile, own API tokens, own export  | yes   | yes         | yes                  |

Where the matrix is silent, ``docs/security.md`` records the choice.  Objects the actor may not
see are reported as not found, so ids reveal nothing; objects the actor may see but not change
give 403.  A system actor is Jobplane itself (bootstrap, scheduler, the admin CLI run on the
server) and may do anything; an actor with neither a user nor that flag may do nothing.
"""

from __future__ import annotations

from sqlalchemy import Select, false, or_

from app.errors import Forbidden
from app.models import Job
from app.services.actors import Actor


def require_admin(actor: Actor, what: str) -> None:
    """Raise Forbidden unless the actor is an admin (or Jobplane itself)."""
    if not (actor.system or (actor.user is not None and actor.user.role == "admin")):
        raise Forbidden(f"only admins may {what}")


def require_can_create_job(actor: Actor) -> None:
    if actor.user is None or actor.user.role not in ("admin", "job_creator"):
        raise Forbidden("your role may not create jobs; ask an admin for the job_creator role")


def can_view_job(actor: Actor, job: Job) -> bool:
    user = actor.user
    if actor.system:
        return True
    if user is None:
        return False
    if user.role == "admin" or job.owner_id == user.id:
        return True
    return user.role == "team_viewer" and user.team_id is not None and job.team_id == user.team_id


def can_run_job(actor: Actor, job: Job) -> bool:
    user = actor.user
    if actor.system:
        return True
    return user is not None and (user.role == "admin" or (user.role == "job_creator" and job.owner_id == user.id))


def can_edit_job(actor: Actor, job: Job) -> bool:
    """Change, pause, resume or delete, and manage its secrets: the owner (a job creator) or an admin."""
    return can_run_job(actor, job)


def visible_jobs(actor: Actor, query: Select) -> Select:
    """Narrow a query over jobs to those the actor may see."""
    user = actor.user
    if actor.system:
        return query
    if user is None:
        return query.where(false())
    if user.role == "admin":
        return query
    if user.role == "team_viewer" and user.team_id is not None:  # as can_view_job: the team's and their own
        return query.where(or_(Job.team_id == user.team_id, Job.owner_id == user.id))
    return query.where(Job.owner_id == user.id)
