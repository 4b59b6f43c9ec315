"""Swagger UI at ``/api/docs``: the OpenAPI document (``/api/openapi.json``), browsable, from
vendored files (``app/api/swagger_ui/``, no CDN).

Both the page and the document are public, as the document was before: they describe the API
and hold no data; every operation still needs a bearer token, which a reader pastes into
Swagger UI's "Authorize" dialog to try the API.
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask, Response, abort, send_from_directory, url_for
from markupsafe import escape

#: The vendored Swagger UI (see its README.md for the version and licence).
SWAGGER_UI_DIR = Path(__file__).with_name("swagger_ui")
#: What the page loads; nothing else in the directory is served.
SERVED_FILES = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "jobplane-swagger-init.js"})
#: The vendored files change only with a release: let browsers keep them for a day.
CACHE_SECONDS = 86400

# The page and its files join flask-smorest's documentation endpoints ("api-docs", where the
# document is served): public, outside the authenticated API, and told apart from it by that name
# in the route inventories.
ENDPOINT_PREFIX = "api-docs"


def init_app(app: Flask) -> None:
    app.add_url_rule("/api/docs", endpoint=f"{ENDPOINT_PREFIX}.swagger_ui", view_func=swagger_ui)
    app.add_url_rule("/api/docs/<string:filename>", endpoint=f"{ENDPOINT_PREFIX}.swagger_ui_file",
                     view_func=swagger_ui_file)


def swagger_ui() -> Response:
    """The Swagger UI page: markup only; the script that starts it is a file, for the CSP."""
    spec_url = escape(url_for(f"{ENDPOINT_PREFIX}.openapi_json"))
    files = {name: escape(url_for(f"{ENDPOINT_PREFIX}.swagger_ui_file", filename=name)) for name in SERVED_FILES}
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Jobplane API</title>
  <link rel="stylesheet" href="{files['swagger-ui.css']}">
</head>
<body>
  <div id="swagger-ui" data-spec-url="{spec_url}"></div>
  <script src="{files['swagger-ui-bundle.js']}"></script>
  <script src="{files['jobplane-swagger-init.js']}"></script>
</body>
</html>
"""
    return Response(page, content_type="text/html; charset=utf-8")


def swagger_ui_file(filename: str) -> Response:
    if filename not in SERVED_FILES:
        abort(404)
    return send_from_directory(SWAGGER_UI_DIR, filename, max_age=CACHE_SECONDS)
