"""MCP tools for AI assistants: five thin adapters over the front door, served by Gradio at /gradio_api/mcp/.

    demo = build_app(wb, mcp=True)                        # registers the five tools (gr.api, queue=False)
    demo.launch(**launch_options(wb, mcp=True))           # mcp_server=True, and only those five listed
    problem = mcp_problem(demo)                           # None, or why the MCP server is not up

Gradio turns each tool's docstring and type hints into its MCP schema. Only `TOOLS` are MCP tools:
Gradio would offer every public endpoint of the page too, so at the server's start (a lifespan hook,
before the first request) its tool table is cut down to these five, named exactly so (no Space-name
prefix). Each call runs as a `Caller` of surface "mcp", resolved by the JSON API's `Users` from the
request's HTTP Basic header (the same logins, throttle and roles); the front door (core/workbench.py)
applies the policy: quotas, the disk budget, safety, and adding being the teacher's from this surface
(core/access.py SURFACE_ADMIN_ACTIONS). Images come in as base64 (a data: URI) or as the URL or id
of a library image; results are JSON text whose images are URLs this server serves (/api/images/{id}).
A refusal is an MCP tool error whose text says it in English, then in Chinese.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
import warnings
from typing import Any, Callable

import gradio as gr
import httpx
from gradio.route_utils import get_root_url

from core import Holder, SearchQuery, Upload, Workbench, parse_terms
from core.access import Caller
from core.errors import ImageError, WorkbenchError
from core.images import MAX_BYTES, from_base64
from core.library.search import MAX_K
from core.messages import localize, without_paths

from .errors import error_text
from .http_api import API_PREFIX, ApiProblem, Users, basic_credentials
from .i18n import LANGS, t

__all__ = ["TOOLS", "MCP_PATH", "McpTools", "mcp_lifespan", "mcp_problem", "ToolRefused"]

TOOLS = ("search_library", "classify_image", "caption_image", "library_stats", "add_image")
MCP_PATH = "/gradio_api/mcp/"          # Gradio's streamable HTTP endpoint
_ENDPOINT = "mcp_"                      # their Gradio api_names: mcp_search_library, ... (the page has /library_stats)
_LIBRARY_URL = re.compile(API_PREFIX + r"/images/([0-9a-f]{6,64})(?:/thumb)?/?$")
_IMAGE_ID = re.compile(r"[0-9a-f]{6,64}")
_DATA_URI = re.compile(r"data:([\w.+/-]*)(?:;[\w=.+-]+)*?;base64,", re.I)
# Gradio warns, as its MCP server starts, that the page's endpoints with a gr.State input make poor tools:
# restrict_tools drops them all before the first request, and none of the five has one
warnings.filterwarnings("ignore", message="This MCP server includes a tool that has a gr.State input",
                        category=UserWarning, module="gradio.mcp")


class ToolRefused(Exception):
    """What an MCP client reads when a tool refuses: the reason in English, then in Chinese."""


def _both(say: Callable[[str], str]) -> str:
    """One text in both languages (an assistant's user may read either): English first."""
    en, zh = say("en"), say("zh")
    return en if en == zh else f"{en}\n{zh}"


class McpTools:
    """The five tools over the server's Holder (a model switch reaches them too). `heavy`: model calls
    at once (as the JSON API's); `max_bytes`: the largest image."""

    def __init__(self, holder: Holder | Workbench, heavy: int = 2, max_bytes: int = MAX_BYTES):
        self.holder, self.max_bytes = Holder.of(holder), max_bytes
        self.users = Users(self.holder.access, surface="mcp")
        self._heavy = threading.BoundedSemaphore(heavy)

    @property
    def wb(self) -> Workbench:
        return self.holder.wb

    def register(self) -> None:
        """Add the tools to the Blocks being built, as public endpoints outside the queue: Gradio's MCP
        server then calls them in place with the client's own request (its Authorization header)."""
        for name in TOOLS:
            gr.api(getattr(self, name), api_name=_ENDPOINT + name, queue=False)

    # ------------------------------------------------------------ the tools
    # Their docstrings are their MCP descriptions: Gradio joins the lines before "Args:", and reads each
    # argument's description from its one line after it.

    def search_library(self, query: str, k: int = 10, request: gr.Request = None) -> str:
        """Search the image library by text, in English or Chinese; weighted terms as in rclip:
        "2:red car" - night, or a library image id as a term ("a1b2c3d4e5f6 + snow").
        以文搜图：用中文或英文描述想找的图片；可加权、可减去词语，如 "2:红色汽车" - 夜晚。
        Returns JSON: results, best first, each {id, score, name, image_url, thumb_url, weak}; weak hits are
        poor matches the app's page hides. image_url is served by this app (with the same login).

        Args:
            query: what to look for, e.g. "a cat on a sofa" or "沙发上的猫"
            k: how many images at most (default 10)
        """
        with self._refusals():
            caller = self._caller(request)
            result = self._model(self.wb.search, SearchQuery(terms=parse_terms(query), k=k), caller)
            hits = [{**self._hit(request, h), "weak": i >= result.strong} for i, h in enumerate(result.hits)]
            return _json({"results": hits, "query_used": result.text_used, "plan": _said(result.plan),
                          "note": _said(result.note)})

    def classify_image(self, image: str, labels: list[str], request: gr.Request = None) -> str:
        """Zero-shot classification of one image among the labels you give.
        零样本分类：给出候选标签（中文或英文），判断图片属于哪一类。
        Returns JSON: labels, most likely first, each {label, probability}, and a note when the model
        cannot judge some labels.

        Args:
            image: base64 data ("data:image/png;base64,...") or the image_url or id of a library image
            labels: two or more candidate labels, e.g. ["cat", "dog", "bird"] or ["猫", "狗"]
        """
        with self._refusals():
            caller = self._caller(request)
            picture = self._picture(image, caller, request)
            spec = labels if isinstance(labels, str) else "\n".join(str(label) for label in labels)
            lang = "zh" if re.search(r"[\u3400-\u9fff]", spec) else "en"
            top, note = self._model(self.wb.classify, picture, spec, lang=lang, caller=caller)
            return _json({"labels": [{"label": label, "probability": round(float(p), 6)} for label, p in top],
                          "note": _said(note)})

    def caption_image(self, image: str, request: gr.Request = None) -> str:
        """Describe one image in a sentence, in English and Chinese.
        看图说话：为图片生成中英文描述。
        Returns JSON {caption_en, caption_zh}.

        Args:
            image: base64 data ("data:image/png;base64,...") or the image_url or id of a library image
        """
        with self._refusals():
            caller = self._caller(request)
            picture = self._picture(image, caller, request)
            return _json(self._model(self.wb.caption, [picture], caller=caller)[0])

    def library_stats(self, request: gr.Request = None) -> str:
        """How big the image library is and which model serves it.
        图库统计：图片数量、模型、占用空间。
        Returns JSON: images, model_id, dim, image_bytes, features_bytes, safety, max_k, max_bytes."""
        with self._refusals():
            caller = self._caller(request)
            stats = {k: v for k, v in self.wb.stats().items() if k != "path"}   # no server paths to clients
            notice = self.wb.notice if caller.admin else without_paths(self.wb.notice)
            return _json({**stats, "notice": _said(notice), "max_k": MAX_K, "max_bytes": self.max_bytes})

    def add_image(self, image: str, request: gr.Request = None) -> str:
        """Add one image to the shared library, where everyone can then search it.
        向共享图库添加一张图片（需要教师登录）。
        Only a teacher's login may add through an assistant; quotas and the class's safety rules apply.
        Returns JSON: added (new ids), duplicates, held (waiting for the teacher's review), images (library
        size), id, image_url.

        Args:
            image: the image as base64 data, e.g. "data:image/jpeg;base64,/9j/4AAQ..."
        """
        with self._refusals():
            caller = self._caller(request)
            name, data = self._bytes(image)
            report = self._model(self.wb.add, [Upload(name, data)], caller=caller)
            if report.errors:   # the one image could not be stored: say why
                raise ImageError(*report.errors[0])
            stored = self.wb.entry(hashlib.sha256(data).hexdigest(), caller)   # the content hash is a long id
            return _json({"added": report.added, "duplicates": report.duplicates, "held": report.held,
                          "images": report.total, "id": stored.id, **self._urls(request, stored.id)})

    # ------------------------------------------------------------ who calls, what comes in, what goes out

    def _caller(self, request: gr.Request | None) -> Caller:
        """The caller from the request's HTTP Basic header (or a Gradio login): the JSON API's Users."""
        raw = _starlette(request)
        if raw is None:   # no HTTP request at all: only an open app lets that through
            if not self.holder.access.open:
                raise ToolRefused(_both(lambda l: t("mcp.login", l)))
            return self.holder.access.caller(None, "mcp", "mcp")
        return self.users.resolve(raw, basic_credentials(raw.headers.get("authorization")))

    def _model(self, fn, *args, **kwargs):
        """A model call, at most `heavy` at once (the rest wait, as the JSON API's do)."""
        with self._heavy:
            return fn(*args, **kwargs)

    def _bytes(self, image: str) -> tuple[str, bytes]:
        """(name, bytes) of base64 data (a data: URI or bare base64), its size checked before decoding."""
        text = (image or "").strip()
        match = _DATA_URI.match(text)
        kind = (match.group(1).split("/")[-1] if match else "") or "png"
        name = f"assistant-upload.{kind.lower()}"
        return name, from_base64(text, name, self.max_bytes)

    def _picture(self, image: str, caller: Caller, request: gr.Request | None):
        """The image: a library image by URL or id (seen as the caller may see it), else base64 data
        through core's safe loader."""
        text = (image or "").strip()
        image_id = self._library_id(text, request)
        if image_id is not None:
            return self.wb.image(self.wb.entry(image_id, caller).path)
        if text.startswith(("http://", "https://", "/")):   # no fetching of other sites from a class's server
            raise ToolRefused(_both(lambda l: t("mcp.bad_url", l)))
        name, data = self._bytes(text)
        return self.wb.image(data, name)

    def _library_id(self, text: str, request: gr.Request | None) -> str | None:
        """The id in a URL of this app's library image (or a bare id); None for anything else."""
        if _IMAGE_ID.fullmatch(text):
            return text
        root = _root(request)
        path = text[len(root):] if root and text.startswith(root) else text if text.startswith("/") else ""
        match = _LIBRARY_URL.match(path)
        return match.group(1) if match else None

    def _urls(self, request: gr.Request | None, image_id: str) -> dict:
        base = f"{_root(request)}{API_PREFIX}/images/{image_id}"
        return {"image_url": base, "thumb_url": f"{base}/thumb"}

    def _hit(self, request: gr.Request | None, h) -> dict:
        return {"id": h.id, "score": round(float(h.score), 6), "name": h.name, **self._urls(request, h.id)}

    @contextlib.contextmanager
    def _refusals(self):
        """Core's domain errors and the login's refusals as ToolRefused, said in both languages."""
        try:
            yield
        except ApiProblem as e:
            raise ToolRefused(_both(lambda l: localize(e.args[0], l))) from None
        except WorkbenchError as e:
            texts = {lang: error_text(e, lang) for lang in LANGS}
            raise ToolRefused(_both(texts.__getitem__)) from None


def _starlette(request: gr.Request | None):
    """The HTTP request under a gr.Request (Gradio's MCP server hands the client's own one in place)."""
    return getattr(request, "request", None) if isinstance(request, gr.Request) else request


def _root(request: gr.Request | None) -> str:
    """This server's public address as the client reached it (proxies and share links included), as the
    JSON API finds it; the MCP endpoint is mounted, so its scope's root_path ends in its own mount path."""
    raw = _starlette(request)
    if raw is None:
        return ""
    root_path = raw.scope.get("root_path") or ""
    root_path = root_path[:root_path.index("/gradio_api/")] if "/gradio_api/" in root_path else root_path
    return get_root_url(raw, raw.url.path, root_path or None)


def _said(note: Any) -> str | None:
    """A core note (a Msg) in both languages, for an assistant that may answer in either."""
    return _both(lambda l: localize(note, l)) if note else None


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


# ------------------------------------------------------------ the server: only the five, and is it up?

def restrict_tools(blocks: gr.Blocks) -> None:
    """Cut Gradio's MCP tool table down to TOOLS, named exactly so: no page endpoint is listed or
    callable as a tool, and no Space-name prefix is added (other tools rely on these names)."""
    server = getattr(blocks, "mcp_server_obj", None)
    if server is None:
        return
    endpoints = set(server.api_info.get("named_endpoints", {}))
    server.tool_prefix = ""
    server.tool_to_endpoint = {name: f"/{_ENDPOINT}{name}" for name in TOOLS if f"/{_ENDPOINT}{name}" in endpoints}


@contextlib.asynccontextmanager
async def mcp_lifespan(app):
    """launch(app_kwargs={"lifespan": ...}): runs once Gradio's MCP server exists, before the first request."""
    restrict_tools(app.get_blocks())
    yield


def mcp_problem(demo: gr.Blocks, timeout: float = 10.0) -> str | None:
    """Why the MCP server asked for is not serving the five tools (None when it is), in both languages:
    Gradio records a failed start (e.g. a `mcp` 2.x it cannot drive) and carries on without it."""
    if getattr(demo, "mcp_server_obj", None) is None:
        error = getattr(demo, "mcp_error", None)
        return _both(lambda l: t("mcp.down", l, reason=error or t("mcp.no_workbench", l)))
    url = demo.local_url.rstrip("/") + MCP_PATH + "schema"
    try:
        response = httpx.get(url, timeout=timeout)
        names = sorted(tool["name"] for tool in response.json()) if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError, TypeError, KeyError) as e:
        names, response = None, e
    if names != sorted(TOOLS):
        reason = f"GET {url}: {getattr(response, 'status_code', response)} {names or ''}".strip()
        return _both(lambda l: t("mcp.down", l, reason=reason))
    return None
