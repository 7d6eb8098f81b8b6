"""Loading Hugging Face models: one place for the cache, HF_ENDPOINT / HF_HUB_OFFLINE, and the
error that says where we looked and what to do. Used by the CLIP encoders (core/models/hf_clip.py),
the captioner and the translator. Imports neither torch nor transformers until a model loads.

A hub id is read from the cache first, with no network at all; only a cache miss goes to the hub,
and only after a quick check (a few seconds at most, remembered for a minute) that the hub answers:
an unreachable hub fails at once with what to do, instead of after transformers' ~30 s of retries.
"""
from __future__ import annotations

import math
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from ..errors import ModelUnavailableError, UnknownModelError
from ..messages import Msg
from ..settings import default_paths

__all__ = ["hub_endpoint", "hub_kwargs", "hub_unreachable", "load_pretrained", "model_type", "is_hub_id", "LazyLoad"]


def hub_endpoint() -> str:
    """The hub address in use: HF_ENDPOINT (a mirror such as https://hf-mirror.com) or the hub itself."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def hub_kwargs(source: str, cache: Path | None, offline: bool) -> dict[str, Any]:
    """from_pretrained keyword arguments: project cache for hub ids, no network when offline."""
    kwargs: dict[str, Any] = {}
    if not Path(source).is_dir():
        kwargs["cache_dir"] = str(Path(cache or default_paths().cache) / "hf")
    if offline or _env_offline():
        kwargs["local_files_only"] = True
    return kwargs


def _env_offline() -> bool:
    """HF_HUB_OFFLINE (else TRANSFORMERS_OFFLINE) as huggingface_hub reads it: "1", "true", "yes" or "on"."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


# ---------------------------------------------------------------- is the hub there at all?

PROBE_TIMEOUT_S = 3.0   # connecting to the hub or OpenAI's host; a refused connection or an unknown name answers at once
PROBE_TTL_S = 60.0      # an answer is reused this long, so a page of requests probes once
_probes: dict[str, tuple[float, str | None]] = {}   # endpoint -> (_now() time, why unreachable | None)
_probe_lock = threading.Lock()
_now = time.monotonic   # the clock of the probe cache and of LazyLoad's retry (a test may stop it)

# What the HTTP client raises when no answer came from the hub (or the proxy in between), by class name, so that
# httpx (huggingface_hub 1.x), httpx2 (2.x) and requests (0.x) all read the same: the connection, the proxy or its
# tunnel, or TLS failed, or the URL cannot be asked at all. Anything else (a slow or garbled answer) means it is there.
_NO_ANSWER = frozenset({"ConnectError", "ConnectTimeout", "ProxyError", "SSLError", "UnsupportedProtocol",
                        "InvalidURL", "MissingSchema", "InvalidSchema", "ConnectionError", "OfflineModeIsEnabled"})


def hub_unreachable(endpoint: str | None = None) -> str | None:
    """None when the hub (`hub_endpoint()` unless given) answers; otherwise why it cannot be reached,
    e.g. "[Errno 111] Connection refused". Takes at most a few seconds, never transformers' ~30 s of
    retries; the answer is remembered for PROBE_TTL_S."""
    endpoint = (endpoint or hub_endpoint()).rstrip("/")
    with _probe_lock:   # concurrent requests wait for one probe instead of each making their own
        seen = _probes.get(endpoint)
        if seen is not None and _now() - seen[0] < PROBE_TTL_S:
            return seen[1]
        reason = _probe(endpoint)
        _probes[endpoint] = (_now(), reason)
        return reason


def _probe(endpoint: str) -> str | None:
    """One HEAD request to the endpoint with the HTTP client huggingface_hub downloads with (its shared
    session: the same proxies from HTTP(S)_PROXY / ALL_PROXY / NO_PROXY, the same certificates, a client set with
    set_client_factory), so "reachable" here means reachable for the downloads. Unreachable: the client could not
    build a connection (DNS, refused, proxy, TLS, no such URL), or no answer in time. Any HTTP answer, even an
    error, or a connection that then stalls, counts as there."""
    from huggingface_hub.utils import get_session   # imported here: the time limit below is the request's alone
    if not endpoint.lower().startswith(("http://", "https://")):   # e.g. HF_ENDPOINT=hf-mirror.com
        return Msg("地址缺少 http:// 或 https://", "the address lacks http:// or https://")

    def ask(timeout: float) -> str | None:
        try:
            session = get_session()   # a SOCKS proxy without its extra fails here, as the downloads would
            if type(session).__module__.split(".")[0] == "requests":   # huggingface_hub < 1.0
                session.head(endpoint + "/", timeout=timeout, allow_redirects=False).close()
            else:
                session.head(endpoint + "/", timeout=timeout, follow_redirects=False)
        except Exception as e:   # noqa: BLE001  sorted by kind below, never raised
            if isinstance(e, ImportError) or _NO_ANSWER.intersection(c.__name__ for c in type(e).__mro__):
                return str(e) or type(e).__name__
        return None

    return bounded_probe(ask, "hub-probe")


def bounded_probe(ask: Callable[[float], str | None], name: str) -> str | None:
    """`ask(PROBE_TIMEOUT_S)` (None: the host answered; else why not) in a daemon thread, waited for at most
    twice that: a hanging DNS lookup, which no request timeout bounds, becomes "no answer within N s".
    Each probe keeps its own HTTP stack (the hub's: huggingface_hub's session; OpenAI's: urllib)."""
    answer: list[str | None] = []
    worker = threading.Thread(target=lambda: answer.append(ask(PROBE_TIMEOUT_S)), name=name, daemon=True)
    worker.start()
    worker.join(2 * PROBE_TIMEOUT_S)
    if not answer:
        return Msg("{seconds} 秒内没有应答", "no answer within {seconds} s", seconds=round(2 * PROBE_TIMEOUT_S))
    return answer[0]


def load_pretrained(what: str, source: str, loaders: Sequence[Callable[..., Any]],
                    cache: Path | None, offline: bool, flag: str | None = None) -> list[Any]:
    """Call each `loader(source, **hub_kwargs)` (from_pretrained-like); any failure to find the
    files becomes a ModelUnavailableError that says where we looked and what to do.
    `what` names the model for that message, e.g. "captioner 'vit-gpt2' (nlpconnect/...)" (a Msg
    to have it in Chinese too); `flag` is the command-line option that takes a local folder instead.

    A hub id (online) is tried from the cache first, without any network; for what is not cached the
    hub is probed (hub_unreachable) before downloading, so an unreachable hub fails in seconds; that
    error carries the probe's reason as `.hub_unreachable` (None on the others)."""
    kwargs = hub_kwargs(source, cache, offline)
    if Path(source).is_dir() or "local_files_only" in kwargs:
        return [_load(what, source, load, kwargs, flag) for load in loaders]
    out = []
    for load in loaders:
        try:
            out.append(load(source, **kwargs, local_files_only=True))
            continue
        except (OSError, ValueError, KeyError):   # not (all) in the cache
            pass
        reason = hub_unreachable()
        if reason is not None:
            error = ModelUnavailableError(Msg(
                "无法连接 Hugging Face 模型库 `{endpoint}`（{reason}），而{what}不在缓存 {cache} 中。如何提供："
                "把 HF_ENDPOINT 设为能连上的镜像（如 `HF_ENDPOINT=https://hf-mirror.com`）；或传入用 save_pretrained() "
                "保存的本地文件夹{local}；或联网运行一次以下载到缓存。",
                "Cannot reach the Hugging Face hub at {endpoint} ({reason}), and the {what} is not in the cache "
                "{cache}. To supply it: set HF_ENDPOINT to a mirror you can reach (e.g. "
                "HF_ENDPOINT=https://hf-mirror.com), pass a local directory saved with save_pretrained(){local}, "
                "or run once online to fill the cache.",
                endpoint=hub_endpoint(), reason=reason, what=what, cache=kwargs["cache_dir"],
                local=_local_hint(flag)))
            error.hub_unreachable = reason   # perhaps brief (a mirror overloaded, a proxy starting): see LazyLoad
            raise error from None
        out.append(_load(what, source, load, kwargs, flag))
    return out


def _local_hint(flag: str | None) -> str:
    return Msg("（{flag} /本地/文件夹）", " ({flag} /local/folder)", flag=flag) if flag else ""


# A download that failed on the way (the hub answered the probe): a timeout, a dropped connection or a server error
# (5xx, 429) is perhaps brief, like an unreachable hub; a 404, a gated repo or corrupt files are final.
_BRIEF = frozenset({"TimeoutError", "TimeoutException", "Timeout", "ReadTimeout", "WriteTimeout", "PoolTimeout",
                    "ConnectTimeout", "ConnectionError", "ConnectError", "ReadError", "WriteError", "ProtocolError",
                    "RemoteProtocolError", "ChunkedEncodingError", "IncompleteRead", "RemoteDisconnected",
                    "ConnectionResetError", "ConnectionAbortedError", "BrokenPipeError"})
_BRIEF_TEXT = re.compile(r"\b(5\d\d|429) (Server|Client) Error\b|couldn't connect to|timed out", re.IGNORECASE)


def _brief(e: BaseException) -> str | None:
    """Why a download failed if that may pass (see _BRIEF), else None; the error's causes are read too
    (transformers wraps the client's error in an OSError)."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        status = getattr(getattr(e, "response", None), "status_code", None)
        if isinstance(status, int) and (status >= 500 or status == 429):
            return f"HTTP {status}"
        if isinstance(status, int):
            return None   # the server answered 4xx: final, whatever the message says
        if _BRIEF.intersection(c.__name__ for c in type(e).__mro__) or _BRIEF_TEXT.search(str(e)):
            return (str(e).strip().splitlines() or [type(e).__name__])[0]
        e = e.__cause__ or e.__context__
    return None


def _load(what: str, source: str, load: Callable[..., Any], kwargs: dict[str, Any], flag: str | None = None) -> Any:
    """One loader; missing/corrupt files, no network or no cache entry -> ModelUnavailableError. A download
    that failed in a way that may pass (_brief) carries the reason as `.hub_unreachable`, so LazyLoad asks again."""
    try:
        return load(source, **kwargs)
    except Exception as e:   # noqa: BLE001  httpx's timeouts are no OSError: sorted here
        downloading = not Path(source).is_dir() and "local_files_only" not in kwargs
        brief = _brief(e) if downloading else None
        if brief is None and not isinstance(e, (OSError, ValueError, KeyError)):
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0].rstrip(".")
        if Path(source).is_dir():
            where = Msg("本地文件夹 {source}", "the local directory {source}", source=source)
        else:
            where = Msg("Hugging Face 模型库（`{endpoint}`）和缓存 {cache}", "the Hugging Face hub ({endpoint}) and the "
                        "cache {cache}", endpoint=hub_endpoint(), cache=kwargs["cache_dir"])
        if "local_files_only" in kwargs and not Path(source).is_dir():
            # transformers words a cache miss as "couldn't connect to huggingface.co": no connection was tried
            raise ModelUnavailableError(Msg(
                "{what}不在缓存 {cache} 中，而离线模式（--offline 或 HF_HUB_OFFLINE=1）不会下载任何文件。如何提供："
                "不用离线模式联网运行一次，从 {endpoint} 下载到缓存（HF_ENDPOINT 可指定镜像，如 `https://hf-mirror.com`）；"
                "或传入用 save_pretrained() 保存的本地文件夹{local}。",
                "The {what} is not in the cache {cache}, and offline mode (--offline or HF_HUB_OFFLINE=1) downloads "
                "nothing. To supply it: run once online (without offline mode) to fill the cache from {endpoint} "
                "(HF_ENDPOINT may name a mirror, e.g. https://hf-mirror.com), or pass a local directory saved with "
                "save_pretrained(){local}.", what=what, cache=kwargs["cache_dir"], endpoint=hub_endpoint(),
                local=_local_hint(flag))) from None
        error = ModelUnavailableError(Msg(
            "无法从{where}加载{what}：{first}。如何提供：传入用 save_pretrained() 保存的本地文件夹；或把 HF_ENDPOINT "
            "设为镜像（如 `https://hf-mirror.com`）；或联网运行一次以下载到缓存。",
            "Could not load the {what} from {where}: {first}. To supply it: pass a local directory saved with "
            "save_pretrained(), set HF_ENDPOINT to a mirror (e.g. https://hf-mirror.com), or run once online to "
            "fill the cache.", what=what, where=where, first=first))
        error.hub_unreachable = brief   # a timeout, a dropped connection, a 5xx: asked again after PROBE_TTL_S
        raise error from None


def model_type(source: str, cache: Path | None, offline: bool, what: str) -> str:
    """config.json's model_type of a local directory or hub id, e.g. "blip", "m2m_100"."""
    from transformers import AutoConfig
    return load_pretrained(what, source, [AutoConfig.from_pretrained], cache, offline)[0].model_type


def is_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and not Path(name).exists()


class LazyLoad:
    """A value built once on first use, under a lock. A failure is remembered and re-raised (a missing
    model must not cost a cache search and a hub probe on every request): for good when the model is
    missing or unknown, only until the probe's answer expires (PROBE_TTL_S) when the hub did not answer,
    so a mirror that was briefly down is asked again instead of disabling the model until a restart."""

    def __init__(self, build: Callable[[], Any]):
        self._build, self._lock = build, threading.Lock()
        self._value: Any = None
        self._error: ModelUnavailableError | UnknownModelError | None = None
        self._retry_at = math.inf   # _now() from which a remembered error is tried again

    def get(self) -> Any:
        if self._value is None:
            with self._lock:
                if self._value is None:
                    if self._error is not None and _now() >= self._retry_at:
                        self._error = None
                    if self._error is None:
                        try:
                            self._value = self._build()
                        except (ModelUnavailableError, UnknownModelError) as e:
                            brief = getattr(e, "hub_unreachable", None) is not None   # else final: never retried
                            self._error, self._retry_at = _bare(e), _now() + PROBE_TTL_S if brief else math.inf
                            raise
                    if self._error is not None:
                        raise _bare(self._error) from None
        return self._value

    @property
    def loaded(self) -> bool:
        return self._value is not None


def _bare(e: BaseException) -> BaseException:
    """A copy of `e` (same class, args and attributes such as `hub_unreachable`) without a traceback, cause or
    context: a remembered error re-raised as itself would gather every request's frames (and their pictures)."""
    copy = type(e).__new__(type(e), *e.args)
    copy.args = e.args
    copy.__dict__.update(e.__dict__)
    return copy
