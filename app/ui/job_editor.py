"""The job form pages: ``/jobs/new``, ``/jobs/{id}/edit``, the cron helper and a job's secrets.

A refused form is shown again with the user's input and an error under each bad field; a save
over a newer version is refused with the conflict said plainly, and nothing the user typed is lost.
"""

from __future__ import annotations

import zoneinfo
from functools import lru_cache
from uuid import UUID

from flask import flash, redirect, render_template, request, url_for

from app.errors import Conflict, InvalidInput
from app.services import access, jobs, schedules, secrets
from app.ui import job_form
from app.ui.job_pages import bp
from app.ui.views import current_actor, explain, signed_in


@lru_cache(maxsize=1)
def _timezones() -> list[str]:
    return sorted(zone for zone in zoneinfo.available_timezones() if "/" in zone or zone == "UTC")


def _render_form(form: dict, *, job=None, errors=None, conflict=None, status: int = 200):
    return render_template("jobs/form.html", form=form, job=job, errors=errors or {}, conflict=conflict,
                           job_types=job_form.JOB_TYPES, concurrency_policies=job_form.CONCURRENCY_POLICIES,
                           executors=job_form.EXECUTORS,
                           misfire_policies=job_form.MISFIRE_POLICIES, presets=job_form.CRON_PRESETS,
                           event_labels=job_form.EVENT_LABELS, timezones=_timezones(),
                           preview=_preview(form)), status


def _preview(form: dict) -> dict:
    """The cron helper's content: a description and the next 5 fire times, or what is wrong."""
    if form.get("when") == "once":
        return {}
    try:
        return schedules.preview(schedule=(form.get("schedule") or "").strip(),
                                 timezone=(form.get("timezone") or "UTC").strip(), count=5)
    except InvalidInput as error:
        return {"errors": error.errors}


@bp.route("/new", methods=["GET", "POST"])
@signed_in
def new_job():
    if request.method == "GET":
        access.require_can_create_job(current_actor())
        return _render_form(job_form.blank())
    shown, data, errors = job_form.parse(request.form, getlist=request.form.getlist)
    if not errors:
        try:
            job = jobs.create_job(actor=current_actor(), data=data)
        except InvalidInput as error:
            errors = error.errors
        else:
            flash(f"Created {job.name}.", "success")
            return redirect(url_for(".show_job", job_id=job.id), 303)
    return _render_form(shown, errors=errors, status=422)


@bp.route("/<uuid:job_id>/edit", methods=["GET", "POST"])
@signed_in
def edit_job(job_id: UUID):
    actor = current_actor()
    job = jobs.get_editable_job(actor=actor, job_id=job_id)
    if request.method == "GET":
        return _render_form(job_form.from_job(job), job=job)
    shown, data, errors = job_form.parse(request.form, getlist=request.form.getlist)
    shown.update(has_slack_webhook=bool(job.notification_slack_webhook),
                 has_webhook_url=bool(job.notification_webhook_url))
    if not errors:
        try:
            jobs.update_job(actor=actor, job_id=job_id, data=data, partial=True,
                            expected_version=request.form.get("version", type=int))
        except Conflict as error:
            return _render_form(shown, job=job, conflict=error, status=409)
        except InvalidInput as error:
            errors = error.errors
        else:
            flash("Saved.", "success")
            return redirect(url_for(".show_job", job_id=job_id), 303)
    return _render_form(shown, job=job, errors=errors, status=422)


@bp.get("/schedule-preview")
@signed_in
def schedule_preview():
    """The cron helper, refreshed as the user types (HTMX)."""
    form = {"when": "cron", "schedule": request.args.get("schedule", ""),
            "timezone": request.args.get("timezone", "UTC")}
    return render_template("jobs/_preview.html", preview=_preview(form), form=form)


@bp.post("/<uuid:job_id>/secrets")
@signed_in
def set_secret(job_id: UUID):
    name = request.form.get("name", "").strip()
    try:
        _, created = secrets.set_secret(actor=current_actor(), job_id=job_id, name=name,
                                        value=request.form.get("value", ""))
    except InvalidInput as error:
        flash(f"Secret not saved: {explain(error)}", "error")
    else:
        flash(f"Secret {name} {'added' if created else 'replaced'}; its value is never shown again.", "success")
    return redirect(url_for(".show_job", job_id=job_id, _anchor="secrets"), 303)


@bp.post("/<uuid:job_id>/secrets/<name>/delete")
@signed_in
def delete_secret(job_id: UUID, name: str):
    secrets.delete_secret(actor=current_actor(), job_id=job_id, name=name)
    flash(f"Secret {name} removed.", "success")
    return redirect(url_for(".show_job", job_id=job_id, _anchor="secrets"), 303)
