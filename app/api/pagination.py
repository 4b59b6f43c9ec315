"""Paginated lists: flask-smorest's ``page``/``page_size`` and ``X-Pagination``, plus an RFC 8288
``Link`` header, so a client follows ``rel="next"`` instead of building page URLs itself."""

from __future__ import annotations

from urllib.parse import urlencode

import flask_smorest
from flask import request

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
