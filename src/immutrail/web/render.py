"""Jinja2 templates with autoescaping on, and the headers every UI response carries."""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

from fastapi import Response
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined

from .chain import short

TEMPLATES = Environment(
    loader=PackageLoader("immutrail.web", "templates"),
    # Every value is escaped, whatever the template's name: event fields are attacker-controlled.
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
TEMPLATES.filters["short"] = short


def as_text(value: object) -> str:
    """A payload value for display: strings as they are, lists joined, anything else as JSON
    (event payloads are whatever their writer put there, so no shape is assumed)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(item, str | int | float) for item in value):
        return ", ".join(str(item) for item in value)
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


TEMPLATES.filters["text"] = as_text

STYLESHEET = (files("immutrail.web") / "templates" / "style.css").read_bytes()

SECURITY_HEADERS = {
    # No script at all, styles only from our own stylesheet, forms only to ourselves.
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


def secure(response: Response, *, cache: bool = False) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    if not cache:
        response.headers["Cache-Control"] = "no-store"
    return response


def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = TEMPLATES.get_template(template).render(**context)
    response = HTMLResponse(html, status_code=status)
    secure(response)
    return response
