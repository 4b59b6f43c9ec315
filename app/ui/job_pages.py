"""``/jobs`` pages: the list, a job's page with its history and charts, and the buttons on it
(run now, pause, resume, delete, test notification).  The form lives in ``job_editor``."""

from __future__ import annotations

from uuid import UUID

from flask import Blueprint, flash, redirect, render_template, request, url_for

from app.errors import Conflict, Forbidden, InvalidInput
from app.models.execution import EXECUTION_STATUSES
from app.services import access, executions, job_metrics, job_overview, jobs, notifications, schedules, secrets
from app.ui.views import current_actor, explain, page_number, signed_in

bp = Blueprint("job_pages", __name__, url_prefix="/jobs")

PAGE_SIZE = 25
HISTORY_PAGE_SIZE = 20
#: the window of the job page's figures and charts
METRICS_DAYS = 30
JOB_STATUSES = ("active", "disabled")
SORTS = {"name": "Name", "-created_at": "Newest", "created_at": "Oldest", "-updated_at": "Recently changed",
         "status": "Status", "job_type": "Type"}



@bp.get("")
@signed_in
def list_jobs():
    filters = {"search": request.args.get("q", "").strip() or None,
               "status": request.args.get("status") or None,
               "job_type": request.args.get("job_type") or None,
               "sort": request.args.get("sort") or "-created_at"}
    page = page_number()
    try:
        rows, total = jobs.list_jobs(actor=current_actor(), limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE, **filters)
    except InvalidInput as error:  # a hand-edited URL: show the list unfiltered, say why
        flash(f"Filters ignored: {explain(error)}", "error")
        rows, total = jobs.list_jobs(actor=current_actor(), limit=PAGE_SIZE, offset=0)
        page = 1
    context = dict(rows=rows, total=total, page=page, pages=max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1),
                   args=request.args, filters=filters, sorts=SORTS, statuses=JOB_STATUSES,
                   last_runs=job_overview.last_runs([job.id for job in rows]),
                   next_fires={job.id: job_overview.next_fire_time(job) for job in rows},
                   can_create=_can_create())
    if request.headers.get("HX-Target") == "job-table":
        return render_template("jobs/_table.html", **context)
    return render_template("jobs/list.html", **context)


def _can_create() -> bool:
    try:
        access.require_can_create_job(current_actor())
    except Forbidden:
        return False
    return True


@bp.get("/<uuid:job_id>")
@signed_in
def show_job(job_id: UUID):
    actor = current_actor()
    job = jobs.get_job(actor=actor, job_id=job_id)
    page = page_number()
    status = request.args.getlist("status")
    history, total = executions.list_job_executions(actor=actor, job_id=job_id, limit=HISTORY_PAGE_SIZE,
                                                    offset=(page - 1) * HISTORY_PAGE_SIZE, statuses=status or None)
    context = dict(job=job, history=history, total=total, page=page,
                   pages=max((total + HISTORY_PAGE_SIZE - 1) // HISTORY_PAGE_SIZE, 1), status_filter=status,
                   statuses=EXECUTION_STATUSES)
    if request.headers.get("HX-Target") == "history":
        return render_template("jobs/_history.html", **context)
    can_edit = access.can_edit_job(actor, job)
    return render_template(
        "jobs/show.html", can_edit=can_edit, can_run=access.can_run_job(actor, job),
        metrics=job_metrics.job_metrics(actor=actor, job_id=job_id, days=METRICS_DAYS),
        next_fire=job_overview.next_fire_time(job),
        schedule_description=schedules.describe(job.schedule) if job.schedule else None,
        secret_names=secrets.list_secret_names(actor=actor, job_id=job_id) if can_edit else [],
        deliveries=notifications.list_for_job(actor=actor, job_id=job_id, limit=10), **context)


@bp.post("/<uuid:job_id>/run")
@signed_in
def run_job(job_id: UUID):
    execution = executions.trigger_manual_run(actor=current_actor(), job_id=job_id)
    return redirect(url_for("execution_pages.show_execution", execution_id=execution.id), 303)


#: the pause and resume buttons: the service each calls and what the page says after
_SWITCHES = {"pause": (jobs.pause_job, "Paused: the job fires nothing until you resume it."),
             "resume": (jobs.resume_job, "Resumed: the job fires on its schedule again.")}


@bp.post("/<uuid:job_id>/<any(pause, resume):switch>")
@signed_in
def switch_job(job_id: UUID, switch: str):
    change, message = _SWITCHES[switch]
    change(actor=current_actor(), job_id=job_id)
    flash(message, "success")
    return redirect(url_for(".show_job", job_id=job_id), 303)


@bp.post("/<uuid:job_id>/delete")
@signed_in
def delete_job(job_id: UUID):
    version = request.form.get("version", type=int)
    try:
        job = jobs.delete_job(actor=current_actor(), job_id=job_id, expected_version=version)
    except Conflict as error:
        flash(f"Not deleted: {error.message}. Look at the job again before deleting it.", "error")
        return redirect(url_for(".show_job", job_id=job_id), 303)
    flash(f"Deleted {job.name}. Its run history stays until retention removes it.", "success")
    return redirect(url_for(".list_jobs"), 303)


@bp.post("/<uuid:job_id>/notifications/test")
@signed_in
def test_notification(job_id: UUID):
    try:
        sent = notifications.send_test(actor=current_actor(), job_id=job_id)
    except InvalidInput as error:
        flash(f"No test sent: {explain(error)}", "error")
    else:
        channels = ", ".join(sorted({row.channel for row in sent}))
        flash(f"Test notification queued for {channels}; its delivery shows below.", "success")
    return redirect(url_for(".show_job", job_id=job_id), 303)
