"""Pages for people: the chat page at `/` and the API docs (Swagger UI at /docs, ReDoc at /redoc).

Every asset is served by keel itself (the chat page from `api/static/`, the docs' JavaScript and
CSS from the `fastapi-offline` wheel), so the pages work with no network.
"""

from functools import cache
from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
DOCS_ASSETS_URL = "/docs-assets"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
# The browser may fetch nothing from elsewhere.
CHAT_CSP = "default-src 'self'"
FAVICON = STATIC_DIR / "favicon.svg"
REDOC_JS = "redoc.standalone.js"
# ReDoc's bundle draws its sidebar logo from a CDN: served with an empty image in its place, the
# page asks nothing of the network and the CSP has nothing to block.
REDOC_CDN_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
EMPTY_IMAGE = b"data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E"
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' blob:; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; worker-src 'self' blob:"
)


def _own_assets_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


@cache
def _redoc_bundle() -> bytes:
    bundle = (DOCS_ASSETS_DIR / REDOC_JS).read_bytes()
    if REDOC_CDN_LOGO not in bundle:  # a new fastapi-offline: this page must be looked at again
        raise RuntimeError(f"{REDOC_JS} no longer links {REDOC_CDN_LOGO.decode()}")
    return bundle.replace(REDOC_CDN_LOGO, EMPTY_IMAGE)


def install_pages(app: FastAPI) -> None:
    """Adds `/`, `/favicon.ico`, `/static/*`, `/docs`, `/redoc` and their assets; the app must be
    created with `docs_url=None, redoc_url=None` (FastAPI's own pages load their assets from a
    CDN)."""

    # Before the assets' mount, which would otherwise serve the bundle as shipped.
    @app.get(f"{DOCS_ASSETS_URL}/{REDOC_JS}", include_in_schema=False)
    async def redoc_bundle() -> Response:
        return Response(_redoc_bundle(), media_type="text/javascript; charset=utf-8")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(FAVICON, media_type="image/svg+xml")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=DOCS_ASSETS_DIR), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/", include_in_schema=False)
    async def chat_page() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "index.html", headers={"Content-Security-Policy": CHAT_CSP}
        )

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return _own_assets_only(
            get_swagger_ui_html(
                openapi_url=openapi_url,
                title=f"{app.title} - Swagger UI",
                oauth2_redirect_url=OAUTH2_REDIRECT_URL,
                swagger_js_url=f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
                swagger_css_url=f"{DOCS_ASSETS_URL}/swagger-ui.css",
                swagger_favicon_url="/favicon.ico",
            )
        )

    @app.get(OAUTH2_REDIRECT_URL, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return _own_assets_only(
            get_redoc_html(
                openapi_url=openapi_url,
                title=f"{app.title} - ReDoc",
                redoc_js_url=f"{DOCS_ASSETS_URL}/redoc.standalone.js",
                redoc_favicon_url="/favicon.ico",
                with_google_fonts=False,
            )
        )
