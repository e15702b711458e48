"""Serving the web application (the built frontend in ``truthset/web_dist``).

The frontend is built from ``web/`` (``npm run build``) straight into the package, so installing
Truthset needs no Node. :func:`mount_webapp` serves its hashed assets under ``/assets`` (cached
for a year: their names change with their content) and answers every other ``GET`` that is not
an API, DICOMweb or documentation path with ``index.html``, so the application's own paths
(``/annotate``, ``/review?project=…``) survive a reload. It must be called after every router is
included: the fallback route matches any path.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.convertors import Convertor, register_url_convertor
from starlette.types import Scope

log = logging.getLogger("truthset.api")

#: Where the build lives inside the installed package.
DIST = Path(__file__).resolve().parent.parent / "web_dist"

#: Path prefixes that never fall back to the application (their 404 and 405 stay as they are).
RESERVED = ("api", "dicomweb", "docs", "redoc", "openapi.json", "healthz", "assets", "metrics",
            ".well-known")


class _WebPath(Convertor[str]):
    """Any path outside :data:`RESERVED`: the fallback route never matches an API path."""

    regex = "(?!(?:" + "|".join(p.replace(".", r"\.") for p in RESERVED) + ")(?:/|$)).*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("truthset_webpath", _WebPath())

#: What the application's pages may load: only this origin; WebAssembly codecs and the
#: image workers need ``wasm-unsafe-eval`` and ``blob:``.
CSP = ("default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self' blob:; "
       "img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; connect-src 'self' data: "
       "blob:; frame-ancestors 'none'; base-uri 'self'; form-action 'self'")


class _ImmutableAssets(StaticFiles):
    """Static files whose names carry their content hash: cache them for good."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
        return response


def build_stamp(dist: Path = DIST) -> dict[str, object] | None:
    """The build's ``build-stamp.json`` (source hash, file count), or ``None`` without a build."""
    path = dist / "build-stamp.json"
    if not path.is_file():
        return None
    data: dict[str, object] = json.loads(path.read_text(encoding="utf-8"))
    return data


def source_hash(web: Path) -> tuple[str, int]:
    """The SHA-256 over the frontend sources in ``web`` the way ``web/stamp.mjs`` computes it.

    Returns the hex digest and the number of files hashed.
    """
    names = ["index.html", "package.json", "package-lock.json", "tsconfig.json",
             "vite.config.ts", "stamp.mjs"]
    files = [web / n for n in names if (web / n).is_file()]
    files += [p for p in (web / "src").rglob("*") if p.is_file()]
    rel = sorted(p.relative_to(web).as_posix() for p in files)
    total = hashlib.sha256()
    for name in rel:
        digest = hashlib.sha256((web / name).read_bytes()).hexdigest()
        total.update(f"{name}\0{digest}\n".encode())
    return total.hexdigest(), len(rel)


def mount_webapp(app: FastAPI, dist: Path = DIST) -> bool:
    """Serve the built web application from ``dist`` on ``app``; ``False`` when there is none.

    Call it last in :func:`truthset.api.app.create_app`: its fallback route answers any path.
    """
    index = dist / "index.html"
    if not index.is_file():
        log.warning("no web application build in %s; serving the API only", dist)
        return False
    html = index.read_text(encoding="utf-8")
    if (dist / "assets").is_dir():
        app.mount("/assets", _ImmutableAssets(directory=dist / "assets"), name="web-assets")
    root = dist.resolve()

    @app.get("/{path:truthset_webpath}", include_in_schema=False)
    def web_application(path: str) -> Response:
        """The application page for any non-API path (files of the build as they are)."""
        candidate = (root / path).resolve() if path else root
        if path and candidate.is_file() and root in candidate.parents \
                and candidate.name != "build-stamp.json":
            return FileResponse(candidate)
        return HTMLResponse(html, headers={"Cache-Control": "no-cache",
                                           "Content-Security-Policy": CSP,
                                           "X-Frame-Options": "DENY",
                                           "Referrer-Policy": "same-origin"})

    return True
