"""The start page: the dashboard when it is installed, else the job list."""

from __future__ import annotations

from flask import Blueprint, current_app, redirect, url_for

from app.ui.views import signed_in

bp = Blueprint("pages", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static")


@bp.get("/")
@signed_in
def home():
    start = "dashboard.dashboard" if "dashboard.dashboard" in current_app.view_functions else "job_pages.list_jobs"
    return redirect(url_for(start))
