"""How the server is doing over HTTP, under the JSON API's logins (ui/http_api.py `Users`):

    GET /metrics       Prometheus text exposition format: clipwb_requests_total{action,surface,outcome},
                       clipwb_request_seconds_bucket{action,surface,le}, errors by kind, gauges for the queue,
                       memory, the library and disk (any login; open without accounts, like /api)
    GET /api/health    the health panel's numbers as JSON (the teacher only when there are logins)

Both read core/health.py's snapshot, the numbers the panel (ui/health.py) shows; plain `def`
endpoints (FastAPI's thread pool), so a scrape never waits behind model work.
"""
from __future__ import annotations

from typing import Callable

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse

from core import Health, prometheus_text
from core.access import Access
from core.messages import Msg

from .health import queue_counts
from .http_api import API_PREFIX, Users, _JsonErrorRoute

__all__ = ["build_health_routes", "METRICS_PATH", "PROMETHEUS_TYPE"]

METRICS_PATH = "/metrics"
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _queue(request: Request) -> tuple[int, int] | None:
    """The app's queue counts, from the Gradio Blocks this server runs (None outside a Gradio app)."""
    get_blocks = getattr(request.app, "get_blocks", None)
    try:
        return queue_counts(get_blocks()) if get_blocks is not None else None
    except ValueError:   # a FastAPI app without Blocks (yet)
        return None


def build_health_routes(workbench: Callable, access: Access) -> APIRouter:
    """GET /metrics and GET /api/health over `workbench()` (the workbench serving now)."""
    health = Health(workbench, access.limits.budget_mb)
    router = APIRouter(dependencies=[Depends(Users(access))], route_class=_JsonErrorRoute, tags=["health"])

    def metrics(request: Request) -> PlainTextResponse:
        return PlainTextResponse(prometheus_text(health.snapshot(queue=_queue(request))), media_type=PROMETHEUS_TYPE)

    def health_json(request: Request) -> dict:
        access.require_admin(request.state.caller, Msg("查看服务器运行状态", "see the server's health"))
        return health.snapshot(queue=_queue(request)).json()

    router.add_api_route(METRICS_PATH, metrics, methods=["GET"], name="metrics", response_class=PlainTextResponse)
    router.add_api_route(f"{API_PREFIX}/health", health_json, methods=["GET"], name="api_health")
    return router
