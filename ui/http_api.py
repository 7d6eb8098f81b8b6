"""A JSON HTTP API over a Workbench, served by the same server as the Gradio app.

    GET  /api/search?q=a+cat&k=10[&minus=dog,people][&threshold=0.2]   text -> images ('"2:cat" + ID - dog' too)
    POST /api/search   JSON {"terms": [{"text"|"image_id"|"image": ..., "weight": w}], "k": 10}   weighted terms
    GET  /api/stats                                                   image count, model id, dimension
    POST /api/search/image?k=10      multipart `image`                image -> images
    POST /api/search/vector          JSON {"vector": [...], "k": 10}  embedding -> images
    GET  /api/similar/{id}?k=10                                       library image -> images
    POST /api/classify               multipart `image` + `labels`, `templates`, `lang`, `top_k`
    POST /api/images                 multipart `files` (one or more)  add to the library
    GET  /api/images/{id}  /api/images/{id}/thumb  /api/library?page=N
    GET  /api/review  POST /api/review/approve {"ids": [...]}  GET /api/near-duplicates?threshold=0.94   (teacher)

`build_api(holder)` returns a FastAPI `APIRouter` over the server's Holder (core/holder.py: the
Workbench every surface reads at each call, switched for all of them at once); `ui.app.launch_options` hands its routes
to Gradio's FastAPI app (`launch(app_kwargs={"routes": ...})`), so `demo.launch()` keeps
serving everything: --share, --auth, the queue. A thin adapter: every call goes to the
Workbench as its caller (surface "api"), which applies the policy; core's domain errors become
JSON {"error", "kind"} with a status chosen by their type (400, 403, 404 for an unknown id, 413);
only stored images and thumbnails are served, found by id through the library, never by a
path from the request. A POST sent by another site's page (its Origin or Referer is not this
app's) is refused with 403 before its body is read (ui/csrf.py). Nothing blocks the event loop: cheap endpoints are plain `def` (FastAPI's
thread pool); model calls wait for one of `heavy` slots without holding a thread, then run in
the thread pool. docs/API.md#json-http-api.
"""
from __future__ import annotations

import asyncio
import base64
import mimetypes
from pathlib import Path

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from starlette.concurrency import run_in_threadpool
from gradio.route_utils import get_root_url
from pydantic import BaseModel

from core import Entry, Hit, Holder, SearchQuery, SearchResult, Upload, Workbench
from core.library.search import Term, parse_terms
from core.access import Access, Caller
from core.errors import ImageError, NotFoundError, PermissionDenied, QueryError, QuotaError, WorkbenchError
from core.images import MAX_BYTES, from_base64
from core.library.search import MAX_K
from core.messages import Msg, without_paths

from .csrf import foreign_origin
from .guard import client_address

__all__ = ["build_api", "Users", "ApiProblem", "basic_credentials", "API_PREFIX", "MAX_FILES"]

API_PREFIX = "/api"
MAX_FILES = 64               # files per POST /api/images (send a bigger folder in several requests)
_FORM_SLACK = 64 * 1024      # multipart headers and text fields around one file
_CACHE = "private, max-age=86400"   # stored files never change (content-addressed), but may need a login
_STATUS = {NotFoundError: 404, PermissionDenied: 403, QuotaError: 413}   # by type; any other WorkbenchError: 400


class ApiProblem(Exception):
    """A problem the API itself detects (login, size); becomes JSON like a domain error."""

    def __init__(self, status: int, message: str, kind: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.kind, self.headers = status, kind, headers


def _error(status: int, message: str, kind: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "kind": kind}, status_code=status, headers=headers)


def _validation_text(e: RequestValidationError) -> str:
    parts = []
    for err in e.errors():
        where = ".".join(str(p) for p in err.get("loc", ())[1:]) or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "Invalid request: " + "; ".join(parts)


class _JsonErrorRoute(APIRoute):
    """Every failure of an API route as JSON {"error", "kind"}, never a traceback. A route may
    carry `body_limit` (bytes): a larger declared body is refused before any of it is read."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def run(request: Request):
            try:
                _check_length(request, getattr(self, "body_limit", None))
                _check_origin(request)
                return await handler(request)
            except ApiProblem as e:
                return _error(e.status, str(e), e.kind, e.headers)
            except HTTPException as e:   # e.g. a malformed Authorization header
                kind = "Unauthorized" if e.status_code == 401 else "HTTPError"
                return _error(e.status_code, str(e.detail), kind, e.headers)
            except RequestValidationError as e:
                return _error(400, _validation_text(e), "ValidationError")
            except WorkbenchError as e:
                return _error(_status(e), str(e), e.kind())
        return run


def _status(e: WorkbenchError) -> int:
    """The HTTP status of a domain error, from its type (never its message)."""
    return next((status for cls, status in _STATUS.items() if isinstance(e, cls)), 400)


def _check_length(request: Request, limit: int | None) -> None:
    declared = request.headers.get("content-length")
    if limit is not None and declared and declared.isdigit() and int(declared) > limit:
        raise ApiProblem(413, f"The request body is {int(declared):,} bytes, over the {limit:,}-byte limit",
                         "TooLarge")


def _check_origin(request: Request) -> None:
    """A writing request made by another site's page is refused (ui/csrf.py), before its body is read."""
    origin = foreign_origin(request)
    if origin is not None:
        raise ApiProblem(403, f"Cross-site request refused: {origin} is not this app's page "
                         "(a browser page on another site may not send requests with your login)", "CrossSiteRequest")


class Users:
    """The dependency that resolves who is calling, as a core `Caller` (roles and quotas are core's
    `Access`): without accounts, an anonymous client (the address stands for the session); else
    the user from HTTP Basic auth or from the Gradio login cookie; 401 otherwise, 429 after too
    many failed attempts from one address. `surface`: where the calls come from ("api"; the MCP
    tools of ui/mcp.py resolve their callers with the same logins as "mcp")."""

    def __init__(self, access: Access, surface: str = "api"):
        self.access, self.surface = access, surface

    def __call__(self, request: Request,
                 basic: HTTPBasicCredentials | None = Depends(HTTPBasic(auto_error=False))) -> Caller:
        request.state.caller = caller = self.resolve(request, basic)   # endpoints read it from there
        return caller

    def resolve(self, request: Request, basic: HTTPBasicCredentials | None) -> Caller:
        """The caller of `request` (ApiProblem 401 / 429 as above); `basic`: its HTTP Basic credentials."""
        client = client_address(request.scope)
        if self.access.open:
            return self.access.caller(None, f"{self.surface}:{client}", self.surface)
        name = basic.username if basic is not None else None
        wait = self.access.throttle.retry_after(client, name)
        if wait > 0:
            raise ApiProblem(429, Msg("登录失败次数过多，请 {s} 秒后再试", "Too many failed logins; try again in {s} s",
                                      s=int(wait) + 1), "TooManyLogins", {"Retry-After": str(int(wait) + 1)})
        if basic is not None:
            if self.access.accounts.check(basic.username, basic.password):
                self.access.throttle.succeeded(client, name)
                return self.access.caller(basic.username, surface=self.surface)
            self.access.throttle.failed(client, name)
        user = _gradio_session_user(request)
        if user:
            return self.access.caller(user, surface=self.surface)
        raise ApiProblem(401, Msg("请登录：发送 HTTP Basic 用户名和密码（应用的 --auth 用户名:密码）",
                                  "Log in: send HTTP Basic credentials (the app's --auth user:password)"),
                         "Unauthorized", {"WWW-Authenticate": 'Basic realm="CLIP Workbench"'})


def basic_credentials(authorization: str | None) -> HTTPBasicCredentials | None:
    """The HTTP Basic credentials of an Authorization header (None without one, or with another
    scheme); ApiProblem 401 when it is malformed. For callers outside FastAPI's dependencies."""
    scheme, _, param = (authorization or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(param.strip(), validate=True).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):   # binascii.Error is a ValueError
        user, sep, password = "", "", ""
    if not sep:
        raise ApiProblem(401, Msg("HTTP Basic 凭据格式不对：应为 base64 编码的“用户名:密码”",
                                  "Malformed HTTP Basic credentials: expected base64 of user:password"),
                         "Unauthorized", {"WWW-Authenticate": 'Basic realm="CLIP Workbench"'})
    return HTTPBasicCredentials(username=user, password=password)


def _gradio_session_user(request: Request) -> str | None:
    """The user of a browser already logged in to the Gradio app (its access-token cookie)."""
    app = request.app
    tokens, cookie_id = getattr(app, "tokens", None), getattr(app, "cookie_id", None)
    if not tokens or not cookie_id:
        return None
    token = request.cookies.get(f"access-token-{cookie_id}") or request.cookies.get(f"access-token-unsecure-{cookie_id}")
    return tokens.get(token) if token else None


class IdList(BaseModel):
    ids: list[str]        # image ids as /api/library shows them


class TermIn(BaseModel):
    text: str | None = None       # a text (Chinese or English)
    image_id: str | None = None   # a library image id, as /api/library shows it
    image: str | None = None      # an image file's bytes in base64 (a data: URL is fine too)
    name: str | None = None       # how the image is named in messages and the plan
    weight: float = 1.0           # a negative weight subtracts the term


class TermsQuery(BaseModel):
    q: str = ""                   # typed terms in the query syntax ('"2:cat" + 3f2a9c0e11d4 - dog'), added to `terms`
    terms: list[TermIn] = []
    k: int = 10
    threshold: float | None = None


class VectorQuery(BaseModel):
    vector: list[float]   # [D] an embedding of this library's model (normalised by the server)
    k: int = 10


def _read_upload(upload: UploadFile, limit: int) -> tuple[str, bytes]:
    """(display name, bytes) of one uploaded file; its size is checked before it is read into memory."""
    name = upload.filename or "upload"
    if upload.size is not None and upload.size > limit:
        raise ImageError(name, f"file is {upload.size:,} bytes, over the {limit:,}-byte limit")
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise ImageError(name, f"file is over the {limit:,}-byte limit")
    return name, data


class _Api:
    """The endpoints, each a few lines over one Workbench method, as the request's caller."""

    def __init__(self, holder: Holder, heavy: int, max_bytes: int):
        self.holder, self.max_bytes = holder, max_bytes
        self.heavy = asyncio.Semaphore(heavy)   # model calls at once (the event loop's, see _model)

    @property
    def wb(self) -> Workbench:
        """The server's workbench now (the Learn tab may switch it for every surface)."""
        return self.holder.wb

    async def _model(self, fn, *args, **kwargs):
        """Run a model call in the thread pool once a slot is free. Waiting requests hold no thread,
        so cheap reads (pages, thumbnails, stats) never wait behind a queue of encodes."""
        async with self.heavy:
            return await run_in_threadpool(fn, *args, **kwargs)

    async def _picture(self, upload: UploadFile):
        """The uploaded image through core's safe loader (read and decoded off the event loop)."""
        name, data = await run_in_threadpool(_read_upload, upload, self.max_bytes)
        return await run_in_threadpool(self.wb.image, data, name)

    # ------------------------------------------------------------ urls and json

    @staticmethod
    def _root(request: Request) -> str:
        """This server's public address (proxies and share links included), no trailing slash."""
        root_path = getattr(request.app, "root_path", None) or request.scope.get("root_path") or None
        return get_root_url(request, request.url.path, root_path)

    def _urls(self, request: Request, image_id: str) -> dict:
        base = f"{self._root(request)}{API_PREFIX}/images/{image_id}"
        return {"image_url": base, "thumb_url": f"{base}/thumb"}

    def _hit(self, request: Request, h: Hit) -> dict:
        return {"id": h.id, "score": round(float(h.score), 6), "name": h.name, **self._urls(request, h.id)}

    def _hits(self, request: Request, result: SearchResult) -> list[dict]:
        """Every hit, best first, each marked "weak" as the page marks it (it shows only the others)."""
        return [{**self._hit(request, h), "weak": i >= result.strong} for i, h in enumerate(result.hits)]

    def _entry(self, request: Request, e: Entry) -> dict:
        return {"id": e.id, "name": e.name, "added": e.meta.get("added"), "width": e.meta.get("width"),
                "height": e.meta.get("height"), **self._urls(request, e.id)}

    def _stored(self, path: Path) -> Path:
        """A path the library gave us, checked to lie inside the library folder (defence in depth)."""
        root = Path(self.wb.root).resolve()
        real = Path(path).resolve()
        if not real.is_relative_to(root) or not real.is_file():
            raise NotFoundError(f"No image with id {real.stem[:12]} on disk; run `python -m core library repair`")
        return real

    # ------------------------------------------------------------ search

    async def search(self, request: Request, q: str = "", k: int = 10, minus: str = "",
                     threshold: float | None = None) -> dict:
        if not q.strip():   # this route's own parameter (the rest of the query is core's to check)
            raise QueryError("Missing query: add ?q=some words, e.g. /api/search?q=a%20cat or ?q=一只猫")
        query = SearchQuery(terms=parse_terms(q), minus=[minus], k=k, threshold=threshold)   # q may weigh terms
        result = await self._model(self.wb.search, query, request.state.caller)
        return {"results": self._hits(request, result), "query_used": result.text_used, "note": result.note,
                "plan": result.plan}

    async def search_terms(self, request: Request, body: TermsQuery) -> dict:
        """Weighted terms: the query syntax in `q` and/or explicit terms; base64 images decoded here, checked
        (size, format, pixels) by core's safe loader like any upload."""
        terms = parse_terms(body.q) + [await run_in_threadpool(self._term, t, i) for i, t in enumerate(body.terms)]
        query = SearchQuery(terms=terms, k=body.k, threshold=body.threshold)
        result = await self._model(self.wb.search, query, request.state.caller)
        return {"results": self._hits(request, result), "query_used": result.text_used, "note": result.note,
                "plan": result.plan, "terms": [_term_out(t) for t in result.terms]}

    def _term(self, t: TermIn, i: int) -> Term:
        if t.image is None:
            return Term(t.weight, text=t.text, image_id=t.image_id)
        name = t.name or f"image {i + 1}"
        raw = from_base64(t.image, name, self.max_bytes)
        return Term(t.weight, text=t.text, image_id=t.image_id, image=raw, name=name)

    async def search_image(self, request: Request, image: UploadFile = File(...), k: int = 10) -> dict:
        query = SearchQuery(image=await self._picture(image), k=k)
        result = await self._model(self.wb.search, query, request.state.caller)
        return {"results": self._hits(request, result)}

    def search_vector(self, request: Request, body: VectorQuery) -> dict:
        hits = self.wb.search_vector(body.vector, body.k, caller=request.state.caller)
        return {"results": [self._hit(request, h) for h in hits]}

    def similar(self, request: Request, image_id: str, k: int = 10) -> dict:
        entry, hits = self.wb.similar(image_id, k, caller=request.state.caller)
        return {"query": self._entry(request, entry), "results": [self._hit(request, h) for h in hits]}

    # ------------------------------------------------------------ classify and add

    async def classify(self, request: Request, image: UploadFile = File(...), labels: str = Form(...),
                       templates: str = Form("single"), lang: str = Form("en"), top_k: int = Form(5)) -> dict:
        if top_k < 1:
            raise QueryError(f"top_k must be at least 1, got {top_k}")
        picture = await self._picture(image)
        top, note = await self._model(self.wb.classify, picture, labels, templates, lang, top_k,
                                      caller=request.state.caller)
        return {"labels": [{"label": label, "probability": float(p)} for label, p in top], "note": note}

    async def add(self, request: Request, files: list[UploadFile] = File(...)) -> dict:
        if len(files) > MAX_FILES:
            raise QueryError(f"{len(files)} files in one request; send at most {MAX_FILES} per request")
        uploads, errors = [], []
        for f in files:   # one file too big never stops the others
            try:
                uploads.append(Upload(*await run_in_threadpool(_read_upload, f, self.max_bytes)))
            except ImageError as e:
                errors.append({"name": e.name, "reason": e.reason})
        report = await self._model(self.wb.add, uploads, caller=request.state.caller)
        errors += [{"name": n, "reason": r} for n, r in report.errors]
        return {"added": report.added, "duplicates": report.duplicates, "errors": errors, "images": report.total,
                "held": report.held, "near_duplicates": [{"id": i, "of": o, "cosine": round(c, 4)} for i, o, c in report.near],
                "seconds": round(report.seconds, 3)}

    # ------------------------------------------------------------ cheap reads

    def stats(self, request: Request) -> dict:
        stats = {k: v for k, v in self.wb.stats().items() if k != "path"}   # no server paths to clients
        notice = self.wb.notice if request.state.caller.admin else without_paths(self.wb.notice)
        return {**stats, "notice": notice, "max_k": MAX_K, "max_bytes": self.max_bytes}

    def library(self, request: Request, page: int = 1) -> dict:
        pg = self.wb.page(page, caller=request.state.caller)   # a student's page has no image waiting for review
        return {"page": pg.page, "pages": pg.pages, "total": pg.total,
                "entries": [{**self._entry(request, e), "held": e.id in pg.held} for e in pg.entries]}

    def image(self, request: Request, image_id: str) -> FileResponse:
        path = self._stored(self.wb.entry(image_id, request.state.caller).path)
        return _file(path)

    def thumb(self, request: Request, image_id: str) -> FileResponse:
        return _file(self._stored(self.wb.thumbnail(self.wb.entry(image_id, request.state.caller))))

    # ------------------------------------------------------------ the teacher's review

    def review(self, request: Request) -> dict:
        queue = self.wb.review(request.state.caller)
        return {"held": [{**self._entry(request, e), "why": h.why, "concept": h.concept, "reason": h.reason(), "by": h.by}
                         for e, h in queue]}

    def approve(self, request: Request, body: IdList) -> dict:
        return {"approved": [e.id for e in self.wb.approve(body.ids, request.state.caller)]}

    def near_duplicates(self, request: Request, threshold: float | None = None) -> dict:
        groups = self.wb.near_duplicates(threshold, request.state.caller)
        return {"groups": [[self._entry(request, e) for e in group] for group in groups]}


def _term_out(t: Term) -> dict:
    """One term of a query's plan: what the encoder read (a text as translated, "asked" as typed), its weight."""
    if t.text is not None:
        return {"text": t.text, "weight": t.weight, **({"asked": t.asked} if t.asked is not None else {})}
    if t.image_id is not None:
        return {"image_id": t.image_id[:12], "name": t.name, "weight": t.weight}
    return {"image": t.name or "image", "weight": t.weight}


def _file(path: Path) -> FileResponse:
    media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media, headers={"Cache-Control": _CACHE, "X-Content-Type-Options": "nosniff"})


def build_api(holder: Holder | Workbench, access: Access | None = None, heavy: int = 2,
              max_bytes: int = MAX_BYTES) -> APIRouter:
    """The /api routes over the server's Holder (or one Workbench). Accounts, roles and quotas are the
    workbench's policy, shared with the UI (`access`, when given, must be that same object).
    `heavy`: model calls at once; `max_bytes`: the largest image file."""
    holder = Holder.of(holder)
    if access is not None and access is not holder.access:
        raise ValueError("build_api: the access policy is the workbench's; build it with build_workbench(access=...)")
    api, users = _Api(holder, heavy, max_bytes), Users(holder.access)
    router = APIRouter(prefix=API_PREFIX, dependencies=[Depends(users)], route_class=_JsonErrorRoute,
                       tags=["workbench"])
    one_file, many = max_bytes + _FORM_SLACK, MAX_FILES * (max_bytes + _FORM_SLACK)
    table = [("GET", "/search", api.search, None), ("GET", "/stats", api.stats, None),
             ("POST", "/search", api.search_terms, 2 * (max_bytes * 4 // 3) + 2 ** 20),   # two full-size base64 images
             ("POST", "/search/image", api.search_image, one_file),
             ("POST", "/search/vector", api.search_vector, 4 * 2 ** 20),
             ("GET", "/similar/{image_id}", api.similar, None),
             ("POST", "/classify", api.classify, one_file), ("POST", "/images", api.add, many),
             ("GET", "/images/{image_id}", api.image, None), ("GET", "/images/{image_id}/thumb", api.thumb, None),
             ("GET", "/library", api.library, None), ("GET", "/review", api.review, None),
             ("POST", "/review/approve", api.approve, 2 ** 20), ("GET", "/near-duplicates", api.near_duplicates, None)]
    for method, path, endpoint, limit in table:
        router.add_api_route(path, endpoint, methods=[method], name=f"api_{endpoint.__name__}")
        router.routes[-1].body_limit = limit   # read by _JsonErrorRoute at request time
    return router
