"""Jobplane: the application factory."""

from __future__ import annotations

import logging
from typing import Any, Mapping

from flask import Flask, g, jsonify

from app import observability
from app.config import load_settings
from app.extensions import db, queue
from app.services import audit_chain, transactions


def create_app(overrides: Mapping[str, Any] | None = None) -> Flask:
    """Build a Jobplane app: settings, extensions, blueprints. Opens no connection.

    Parameters:
      overrides: settings by key (``{"DATABASE_URL": ...}``), applied over the environment.
    """
    app = Flask(__name__, static_folder=None)  # the UI blueprint serves /static
    app.config.update(load_settings(overrides=overrides))
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_BODY_BYTES"]
    logging.getLogger("app").setLevel(app.config["LOG_LEVEL"])

    db.init_app(app)
    transactions.install(app.extensions["jobplane_db"].sessionmaker)
    audit_chain.install(app.extensions["jobplane_db"].sessionmaker)
    queue.init_app(app)

    from app import api, ui
    from app.tasks.actors import register_actors

    register_actors(queue.broker_of(app))
    api.init_app(app)
    ui.init_app(app)
    observability.init_app(app)
    app.after_request(_commit_or_roll_back)
    app.add_url_rule("/health", "health", _health)
    return app


def _commit_or_roll_back(response):
    """One commit point per request: commit what succeeded, roll back the rest."""
    session = g.get("db_session")
    if session is not None:
        if response.status_code < 400:
            session.commit()
        else:
            session.rollback()
    return response


def _health():
    """Liveness: the process answers. (Readiness, with its dependencies, is ``/ready``.)"""
    return jsonify(status="ok")
