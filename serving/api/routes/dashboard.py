"""The freshness dashboard: `GET /freshness` and the few static files it loads.

The page is static and carries no data and no secret: its script asks
`GET /v1/freshness` with the bearer token the viewer gives it (a `#token=`
fragment, which browsers never send to the server, or a form; kept in
`sessionStorage`). So these routes need no auth. Only the files named in
`ASSETS` are served, straight from `serving/static/`: no directory listing,
no path from the request ever reaches the file system.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException, status
from fastapi.responses import FileResponse

STATIC_DIR = Path(__file__).resolve().parents[2] / "static"

# Served name -> (file under STATIC_DIR, media type).
ASSETS: dict[str, tuple[str, str]] = {
    "freshness.js": ("freshness.js", "text/javascript; charset=utf-8"),
    "freshness.css": ("freshness.css", "text/css; charset=utf-8"),
    "uPlot.iife.min.js": ("vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    "uPlot.min.css": ("vendor/uPlot.min.css", "text/css; charset=utf-8"),
}

# Scripts and styles from this origin only; the data comes from this origin too.
# uPlot sets element styles from script (allowed); no inline <script> anywhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

router = APIRouter(tags=["dashboard"])


@router.get(
    "/freshness",
    response_class=FileResponse,
    summary="The freshness dashboard (HTML; its data calls need the bearer token)",
    include_in_schema=False,
)
async def freshness_page() -> FileResponse:
    return FileResponse(
        STATIC_DIR / "freshness.html", media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS
    )


@router.get("/static/dashboard/{name}", response_class=FileResponse, include_in_schema=False)
async def dashboard_asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail="no such asset")
    relative, media_type = ASSETS[name]
    return FileResponse(
        STATIC_DIR / relative,
        media_type=media_type,
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )
