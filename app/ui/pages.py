"""The web UI's pages. Until the full UI lands, a home page that shows who is signed in."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for

from app.ui.web_auth import web_actor

bp = Blueprint("pages", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static")


@bp.get("/")
def home():
    actor = web_actor()
    if actor is None:
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    return render_template("home.html", user=actor.user)
