"""The technician page: ``GET /`` and its stylesheet and script, served without the token (the page
asks for it once and keeps it in the tab's ``sessionStorage``; every API call it makes carries it).

Static files of this package (``static/``), read once when the application is built; nothing is
fetched from elsewhere (no CDN, no build step). A strict Content-Security-Policy keeps the page to
this origin: scripts and styles from here only, images from here or the ``blob:`` URLs the page
makes of the preview's JPEGs.

Public API: ``PAGES`` (path to file name), ``PUBLIC`` (what the auth middleware lets through),
``add_static_pages(app)``.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

STATIC_DIR = Path(__file__).resolve().parent / "static"

PAGES: dict[str, tuple[str, str]] = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/technician.css": ("technician.css", "text/css; charset=utf-8"),
    "/technician.js": ("technician.js", "text/javascript; charset=utf-8"),
}
PUBLIC = frozenset((method, path) for path in PAGES for method in ("GET", "HEAD"))

HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}


def _page(body: bytes, content_type: str) -> Handler:
    async def serve(_request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, headers={**HEADERS, "Content-Type": content_type})

    return serve


def add_static_pages(app: web.Application) -> None:
    for path, (name, content_type) in PAGES.items():
        app.router.add_get(path, _page((STATIC_DIR / name).read_bytes(), content_type))
