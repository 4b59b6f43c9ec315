"""Paginated lists: flask-smorest's ``page``/``page_size`` and ``X-Pagination``, plus an RFC 8288
``Link`` header, so a client follows ``rel="next"`` instead of building page URLs itself."""

from __future__ import annotations

from functools import wraps
from urllib.parse import urlencode

import flask_smorest
import marshmallow as ma
from flask import request

#: The highest page number a list accepts: far past any real list, and its offset stays inside
#: PostgreSQL's bigint (a page of 2^63 made the OFFSET overflow: a 500, found by schemathesis).
MAX_PAGE = 1_000_000_000

#: The link relations given, in the order they are listed.
_RELATIONS = ("first", "prev", "next", "last")

LINK_HEADER = {
    "description": 'RFC 8288 links to the first, previous, next and last pages, e.g. '
                   '`<https://jobplane.example.com/api/v1/jobs?page=2&page_size=10>; rel="next"`; '
                   "the other query parameters (filters, sort) are kept",
    "schema": {"type": "string"},
}


class Blueprint(flask_smorest.Blueprint):
    """A flask-smorest blueprint whose paginated routes also answer with a ``Link`` header."""

    def _set_pagination_metadata(self, page_params, result, headers):
        result, headers = super()._set_pagination_metadata(page_params, result, headers)
        links = page_links(page_params.page, page_params.page_size, page_params.item_count)
        if links:
            headers["Link"] = links
        return result, headers

    def paginate(self, pager=None, **options):
        """flask-smorest's ``paginate``, with ``page`` at most MAX_PAGE (documented, and checked first)."""
        paginate = super().paginate(pager, **options)

        def decorator(func):
            paginated = paginate(func)

            @wraps(paginated)
            def wrapper(*args, **kwargs):
                _check_page()
                return paginated(*args, **kwargs)

            parameters = wrapper._apidoc["pagination"]["parameters"]
            parameters["schema"] = type("PaginationParametersSchema", (parameters["schema"],), {
                "page": ma.fields.Integer(load_default=1, validate=ma.validate.Range(min=1, max=MAX_PAGE))})
            return wrapper

        return decorator

    def _document_pagination_metadata(self, spec, resp_doc):
        super()._document_pagination_metadata(spec, resp_doc)
        resp_doc.setdefault("headers", {})["Link"] = LINK_HEADER


def page_links(page: int, page_size: int, item_count: int) -> str:
    """The ``Link`` header of a page: first and last always (when anything matches), prev and next
    where they exist. A page past the end links back to the last page as ``prev``.

    The links keep every query parameter of the request (filters, sort, page_size) but ``page``.
    """
    if not item_count:
        return ""
    last = (item_count - 1) // page_size + 1
    pages = {"first": 1, "last": last}
    if page > 1:
        pages["prev"] = min(page - 1, last)
    if page < last:
        pages["next"] = page + 1
    args = [(name, value) for name, value in request.args.items(multi=True) if name != "page"]
    return ", ".join(f'<{request.base_url}?{urlencode([*args, ("page", pages[rel])])}>; rel="{rel}"'
                     for rel in _RELATIONS if rel in pages)


def _check_page() -> None:
    """Refuse a page past MAX_PAGE as flask-smorest refuses a page below 1; a page that is not a
    number is left to flask-smorest's own check."""
    try:
        page = int(request.args.get("page", "1"))
    except ValueError:
        return
    if page > MAX_PAGE:
        flask_smorest.abort(422, message=f"page must be 1 to {MAX_PAGE}",
                            errors={"query": {"page": [f"Must be greater than or equal to 1 and less than or "
                                                       f"equal to {MAX_PAGE}."]}})
