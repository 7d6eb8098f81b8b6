"""Captions with no hub in reach (issue "The first five minutes"): a cached model loads with no network
at all; a missing one fails within seconds, not after transformers' ~30 s of retries, and says what to
do; the caption tab says which step it is on. Nothing here leaves this machine: the "hub" is a closed
local port, a local HTTP server, or transformers' download functions mocked as in test_hub_fallback."""
from __future__ import annotations

import http.server
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

import core.models.hf as hf
from core.errors import ModelUnavailableError
from core.language.caption import Captioner, CaptionSettings
from core.language.query import caption_metadata
from core.language.translate import Translator
from core.messages import Msg, localize
from core.settings import pick_runtime
from tests.hf_tiny_text import make_tiny_vit_gpt2_dir

CPU = pick_runtime("cpu")
FAST = CaptionSettings(num_beams=1, max_new_tokens=4)
REVISION = "0" * 40


def closed_port() -> int:
    """A local port nothing listens on: connecting is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def online(monkeypatch):
    """Not offline (conftest makes every test offline), with no remembered hub probes; returns a
    list that records each real probe of the hub."""
    import huggingface_hub.constants as hub_constants
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)   # read once at import, from conftest's env
    monkeypatch.setattr(hf, "_probes", {})
    probes, real = [], hf._probe
    monkeypatch.setattr(hf, "_probe", lambda endpoint: probes.append(endpoint) or real(endpoint))
    return probes


@pytest.fixture(scope="module")
def tiny_vit_gpt2(tmp_path_factory) -> Path:
    return make_tiny_vit_gpt2_dir(tmp_path_factory.mktemp("tiny") / "vit-gpt2")


def in_hub_cache(repo_dir: Path, cache: Path, repo_id: str) -> None:
    """Put a save_pretrained() folder into `cache` in the layout huggingface_hub downloads to."""
    repo = cache / "hf" / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    shutil.copytree(repo_dir, repo / "snapshots" / REVISION)


@pytest.fixture(scope="module", autouse=True)
def transformers_imported():
    """Import the model classes once, so the timings below measure loading, not importing."""
    import transformers
    for name in ("VisionEncoderDecoderModel", "ViTImageProcessor", "AutoTokenizer", "AutoModelForSeq2SeqLM"):
        getattr(transformers, name)


# ---------------------------------------------------------------- an unreachable hub fails at once

def test_unreachable_hub_fails_at_once_says_what_to_do_and_is_not_retried(online, monkeypatch, tmp_path):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    cap = Captioner("vit-gpt2", CPU, cache=tmp_path / "cache")
    start = time.perf_counter()
    with pytest.raises(ModelUnavailableError) as err:
        cap.caption([Image.new("RGB", (16, 16))])
    took = time.perf_counter() - start
    assert took < 3, f"{took:.1f} s"
    message = str(err.value)
    for part in (f"Cannot reach the Hugging Face hub at {endpoint}", "refused", "nlpconnect/vit-gpt2-image-captioning",
                 str(tmp_path / "cache"), "HF_ENDPOINT=https://hf-mirror.com", "save_pretrained()",
                 "--captioner /local/folder", "run once online"):
        assert part in message, part
    chinese = localize(err.value, "zh")
    assert "无法连接" in chinese and endpoint in chinese and "--captioner" in chinese
    assert online == [endpoint]
    start = time.perf_counter()
    with pytest.raises(ModelUnavailableError):   # the next request: the remembered failure, no new attempt
        cap.caption([Image.new("RGB", (16, 16))])
    assert time.perf_counter() - start < 0.1 and online == [endpoint]
    with pytest.raises(ModelUnavailableError, match="Cannot reach"):   # another model: the probe's answer is reused
        Translator("nllb", CPU, cache=tmp_path / "cache").translate(["一只猫"], to="en")
    assert online == [endpoint]


def test_unreachable_hub_for_the_translator_names_its_flag(online, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    start = time.perf_counter()
    with pytest.raises(ModelUnavailableError) as err:
        Translator("marian", CPU, cache=tmp_path).translate(["一只猫"], to="en")
    assert time.perf_counter() - start < 3
    assert "Helsinki-NLP/opus-mt-zh-en" in str(err.value) and "--translator /local/folder" in str(err.value)


# ---------------------------------------------------------------- the cache first, with no network

def test_cached_hub_model_loads_without_any_network(online, monkeypatch, tmp_path, tiny_vit_gpt2):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    in_hub_cache(tiny_vit_gpt2, tmp_path / "cache", "tiny-org/vit-gpt2")
    connects = []

    def no_network(sock, address):
        connects.append(address)
        raise OSError("this test allows no network")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    cap = Captioner("tiny-org/vit-gpt2", CPU, FAST, cache=tmp_path / "cache")
    assert len(cap.caption([Image.new("RGB", (20, 20), "red")])) == 1
    assert cap.loaded and online == [] and connects == []


def fake_loader(name: str, cached: set, calls: list, fails_online: bool = False):
    """A from_pretrained stand-in: from the cache only when local_files_only, else "downloads"."""
    def load(source, cache_dir, local_files_only=False):
        calls.append((name, local_files_only))
        if local_files_only and name not in cached:
            raise OSError(f"{name} is not in the cache")
        if fails_online:
            raise OSError(f"404 Client Error: {name} not found")
        cached.add(name)
        return name
    return load


def test_a_cache_miss_probes_the_hub_once_then_downloads(online, monkeypatch, tmp_path):
    cached, calls = set(), []
    loaders = [fake_loader("model", cached, calls), fake_loader("tokenizer", cached, calls)]
    with local_hub() as endpoint:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        assert hf.load_pretrained("test model", "org/model", loaders, tmp_path, False) == ["model", "tokenizer"]
        assert calls == [("model", True), ("model", False), ("tokenizer", True), ("tokenizer", False)]
        assert online == [endpoint]   # one probe for all the files
        calls.clear()
        monkeypatch.setattr(hf, "_probes", {})
        assert hf.load_pretrained("test model", "org/model", loaders, tmp_path, False) == ["model", "tokenizer"]
        assert calls == [("model", True), ("tokenizer", True)] and online == [endpoint]   # cached: no probe
        with pytest.raises(ModelUnavailableError) as err:   # the hub answers but has no such model
            hf.load_pretrained("test model", "org/other", [fake_loader("other", cached, calls, fails_online=True)],
                               tmp_path, False)
    assert f"Could not load the test model from the Hugging Face hub ({endpoint})" in str(err.value)
    assert "404 Client Error" in str(err.value) and "无法从" in localize(err.value, "zh")


# ---------------------------------------------------------------- the probe itself

class _Answers(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self):
        self.send_response(404 if self.path != "/" else 200)   # any answer means the hub is there
        self.end_headers()

    def log_message(self, *args):
        pass


class local_hub:
    """A local HTTP server standing in for the hub's front page: `with local_hub() as endpoint:`."""

    def __init__(self, port: int = 0, handler: type = _Answers):
        self.port, self.handler = port, handler

    def __enter__(self) -> str:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), self.handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_probe_answers_fast_and_is_remembered_for_a_while(online, monkeypatch):
    with local_hub() as up:
        assert hf.hub_unreachable(up) is None and hf.hub_unreachable(up + "/") is None
    down = f"http://127.0.0.1:{closed_port()}"
    start = time.perf_counter()
    assert "refused" in hf.hub_unreachable(down)
    assert time.perf_counter() - start < 1
    assert hf.hub_unreachable(down) and online == [up, down]   # remembered: no second probe
    monkeypatch.setattr(hf, "PROBE_TTL_S", 0.0)
    assert hf.hub_unreachable(down) and online == [up, down, down]   # after PROBE_TTL_S: asked again
    lacks = hf.hub_unreachable("hf-mirror.com")   # HF_ENDPOINT without https://
    assert "lacks http:// or https://" in lacks and "缺少" in lacks.text("zh")


def test_probe_gives_up_on_a_hanging_lookup(online, monkeypatch):
    def hangs(*a, **k):   # a DNS server that never answers, then gives up
        time.sleep(2)
        raise socket.gaierror(-3, "Temporary failure in name resolution")
    monkeypatch.setattr(socket, "getaddrinfo", hangs)
    monkeypatch.setattr(hf, "PROBE_TIMEOUT_S", 0.2)
    start = time.perf_counter()
    reason = hf.hub_unreachable("http://hub.invalid")
    assert time.perf_counter() - start < 2
    assert isinstance(reason, Msg) and "no answer within" in reason and "秒内没有应答" in reason.text("zh")


class _Proxy(http.server.BaseHTTPRequestHandler):
    """An HTTP proxy stand-in: answers every request itself with 200 and records what it was asked for."""

    def do_HEAD(self):
        self.server.asked.append(f"{self.command} {self.path}")
        self.send_response(200)
        self.end_headers()

    do_GET = do_CONNECT = do_HEAD

    def log_message(self, *args):
        pass


@pytest.fixture
def hub_session(monkeypatch):
    """No proxy settings but the test's own, and huggingface_hub's shared HTTP session made anew (it reads the
    proxies once, when it is made), before the test and after it."""
    from huggingface_hub.utils import close_session
    for name in ("ALL_PROXY", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    close_session()
    yield close_session
    close_session()


def test_probe_goes_through_an_all_proxy_as_the_downloads_do(online, hub_session, monkeypatch):
    """A Clash/V2Ray-style setup: only ALL_PROXY is set, and the hub's name resolves only on the proxy's side."""
    monkeypatch.setenv("HF_ENDPOINT", "http://hub.invalid")
    proxy = local_hub(handler=_Proxy)
    with proxy as address:
        proxy.server.asked = []
        monkeypatch.setenv("ALL_PROXY", address)
        assert hf.hub_unreachable() is None
        assert proxy.server.asked == ["HEAD http://hub.invalid/"] and online == ["http://hub.invalid"]
        monkeypatch.delenv("ALL_PROXY")
        hub_session()                               # a new session, without the proxy
        monkeypatch.setattr(hf, "_probes", {})
        start = time.perf_counter()
        reason = hf.hub_unreachable()
        assert reason is not None and time.perf_counter() - start < 2 * hf.PROBE_TIMEOUT_S + 0.5
        assert proxy.server.asked == ["HEAD http://hub.invalid/"]   # asked directly: no name, no answer


def test_an_unusable_proxy_is_unreachable_with_its_reason(online, hub_session, monkeypatch):
    monkeypatch.setenv("ALL_PROXY", f"socks5://127.0.0.1:{closed_port()}")   # without httpx's socks extra: says so
    reason = hf.hub_unreachable("http://hub.invalid")
    assert reason and ("socks" in reason.lower() or "refused" in reason)


# ---------------------------------------------------------------- a failure is remembered, a brief one not for good

def test_an_unreachable_hub_is_asked_again_after_the_probe_ttl(online, monkeypatch, tmp_path):
    clock = [1000.0]
    monkeypatch.setattr(hf, "_now", lambda: clock[0])
    port = closed_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    cached, calls = set(), []
    lazy = hf.LazyLoad(lambda: hf.load_pretrained("test model", "org/model", [fake_loader("model", cached, calls)],
                                                  tmp_path, False))
    with pytest.raises(ModelUnavailableError, match="Cannot reach") as first:
        lazy.get()
    assert "refused" in first.value.hub_unreachable and len(online) == 1
    clock[0] += hf.PROBE_TTL_S - 1
    with pytest.raises(ModelUnavailableError) as again:   # within the probe's TTL: remembered, nothing tried
        lazy.get()
    assert_same_error(again.value, first.value)
    assert again.value.hub_unreachable == first.value.hub_unreachable
    assert len(online) == 1 and calls == [("model", True)]
    with local_hub(port):                         # the mirror is back, and a minute has passed
        clock[0] += 1
        assert lazy.get() == ["model"] and lazy.loaded
    assert len(online) == 2 and calls == [("model", True), ("model", True), ("model", False)]


def test_a_missing_model_stays_remembered(online, monkeypatch, tmp_path):
    clock = [1000.0]
    monkeypatch.setattr(hf, "_now", lambda: clock[0])
    cached, calls = set(), []
    lazy = hf.LazyLoad(lambda: hf.load_pretrained("test model", "org/gone", [
        fake_loader("gone", cached, calls, fails_online=True)], tmp_path, False))
    with local_hub() as endpoint:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        with pytest.raises(ModelUnavailableError, match="404") as first:
            lazy.get()
        assert getattr(first.value, "hub_unreachable", None) is None
        clock[0] += 100 * hf.PROBE_TTL_S
        with pytest.raises(ModelUnavailableError) as again:
            lazy.get()
    assert_same_error(again.value, first.value)
    assert calls == [("gone", True), ("gone", False)]


def assert_same_error(again: BaseException, first: BaseException) -> None:
    assert type(again) is type(first) and again.args == first.args and str(again) == str(first)


def test_a_remembered_error_keeps_no_frames_of_earlier_requests():
    def build():
        picture = bytearray(1_000_000)   # noqa: F841  what a request's frame would hold
        raise ModelUnavailableError(Msg("缺少", "missing"))

    def request(lazy):   # one request's frame, as a callback's would be
        marker = object()   # noqa: F841
        lazy.get()

    lazy = hf.LazyLoad(build)
    errors = []
    for _ in range(5):
        try:
            request(lazy)
        except ModelUnavailableError as e:
            errors.append(e)
    assert len({id(e) for e in errors}) == 5 and all(str(e) == "missing" for e in errors)
    assert lazy._error.__traceback__ is None and lazy._error.__context__ is None and lazy._error.__cause__ is None
    for e in errors[1:]:   # this request's own frames only: request -> get, never build or earlier requests
        frames, tb = [], e.__traceback__
        while tb is not None:
            frames.append(tb.tb_frame.f_code.co_name)
            tb = tb.tb_next
        assert frames.count("request") == 1 and "build" not in frames, frames
        assert e.__context__ is None


# ---------------------------------------------------------------- the caption tab says which step runs

class _Captioner:
    def __init__(self):
        self.loaded = False

    def load(self):
        self.loaded = True

    def caption(self, images):
        assert self.loaded
        return ["a cat" for _ in images]


class _Translator:
    def translate(self, texts, to="zh"):
        return ["一只猫" for _ in texts]


class _Workbench:
    """What Callbacks.caption uses of a Workbench, with the real caption_metadata behind it."""

    def __init__(self, captioner, translator):
        from core.access import Access
        self.captioner, self.translator, self.access = captioner, translator, Access()

    @staticmethod
    def image(path):
        return Image.new("RGB", (8, 8))

    def caption(self, images, stage=None, caller=None):
        return caption_metadata(images, self.captioner, self.translator, stage)


def _progress_recorder():
    seen = []
    return seen, (lambda value, desc=None, **_: seen.append(desc))


@pytest.mark.parametrize("lang,texts", [
    ("en", ["loading the captioner (first time: downloads ~1 GB)…", "writing the English caption…",
            "translating into Chinese…"]),
    ("zh", ["正在加载描述模型（第一次需下载约 1 GB）…", "正在生成英文描述…", "正在翻译成中文…"])])
def test_caption_tab_reports_each_step_in_the_ui_language(lang, texts):
    from ui.callbacks import Callbacks
    captioner = _Captioner()
    cb = Callbacks(_Workbench(captioner, _Translator()))
    seen, progress = _progress_recorder()
    en, zh, status = cb.caption("x.png", lang, progress=progress)
    assert (en, zh) == ("a cat", "一只猫") and seen == texts
    seen.clear()
    cb.caption("x.png", lang, progress=progress)
    assert seen == texts[1:]   # loaded now: no loading step


def test_caption_tab_shows_core_messages_in_the_ui_language():
    from ui.callbacks import Callbacks

    class Missing(_Captioner):
        def load(self):
            raise ModelUnavailableError(Msg("连不上模型库 {endpoint}", "Cannot reach {endpoint}", endpoint="http://x"))

    class NoZh(_Translator):
        def translate(self, texts, to="zh"):
            raise ModelUnavailableError(Msg("缺少 {model}", "{model} is missing", model="opus-mt-en-zh"))

    _, progress = _progress_recorder()
    en, zh, status = Callbacks(_Workbench(Missing(), None)).caption("x.png", "zh", progress=progress)
    assert en == zh == "" and "连不上模型库 http://x" in status and "Cannot reach" not in status
    en, zh, status = Callbacks(_Workbench(_Captioner(), NoZh())).caption("x.png", "zh", progress=progress)
    assert en == "a cat" and zh == "" and "缺少 opus-mt-en-zh" in status
    _, _, status = Callbacks(_Workbench(_Captioner(), NoZh())).caption("x.png", "en", progress=progress)
    assert "opus-mt-en-zh is missing" in status


# ---------------------------------------------------------------- a download that fails on the way may be brief

class _Response:
    def __init__(self, status_code):
        self.status_code = status_code


class _HTTPError(OSError):
    def __init__(self, message, status_code):
        super().__init__(message)
        self.response = _Response(status_code)


class ReadTimeout(Exception):   # httpx's: no OSError
    pass


class RemoteProtocolError(Exception):
    pass


def _wrapped(inner: BaseException) -> OSError:
    """As transformers raises it: an OSError from the client's error."""
    try:
        raise inner
    except BaseException as e:   # noqa: BLE001
        try:
            raise OSError("Can't load the model for 'org/model'.") from e
        except OSError as outer:
            return outer


@pytest.mark.parametrize("failure, brief", [
    (_HTTPError("503 Server Error: Service Unavailable for url", 503), True),
    (_HTTPError("Server Error", 502), True),
    (_HTTPError("429 Client Error: Too Many Requests", 429), True),
    (OSError("500 Server Error: Internal Server Error"), True),
    (_wrapped(ReadTimeout("The read operation timed out")), True),
    (ReadTimeout("The read operation timed out"), True),
    (_wrapped(RemoteProtocolError("peer closed connection without sending complete message body")), True),
    (ConnectionResetError(104, "Connection reset by peer"), True),
    (_HTTPError("404 Client Error: Repository Not Found", 404), False),
    (OSError("404 Client Error: org/model not found"), False),
    (OSError("org/model does not appear to have a file named pytorch_model.bin"), False),
    (ValueError("Unable to parse config.json: corrupt"), False),
])
def test_a_download_failing_on_the_way_is_retried_a_missing_model_not(online, failure, brief, monkeypatch, tmp_path):
    clock = [1000.0]
    monkeypatch.setattr(hf, "_now", lambda: clock[0])
    monkeypatch.setattr(hf, "_probe", lambda endpoint: None)   # the probe is answered
    calls = []

    def load(source, cache_dir, local_files_only=False):
        calls.append(local_files_only)
        if local_files_only:
            raise OSError("not in the cache")
        raise failure
    lazy = hf.LazyLoad(lambda: hf.load_pretrained("test model", "org/model", [load], tmp_path, False))
    with pytest.raises(ModelUnavailableError) as first:
        lazy.get()
    assert (getattr(first.value, "hub_unreachable", None) is not None) == brief
    clock[0] += hf.PROBE_TTL_S + 1
    with pytest.raises(ModelUnavailableError):
        lazy.get()
    assert len(calls) == (4 if brief else 2)   # asked again after the probe's TTL, or remembered for good


def test_a_failure_of_a_local_folder_is_final(tmp_path):
    def load(source, cache_dir=None, local_files_only=False, **kw):
        raise TimeoutError("timed out")
    with pytest.raises(ModelUnavailableError) as err:
        hf.load_pretrained("test model", str(tmp_path), [load], tmp_path, False)
    assert getattr(err.value, "hub_unreachable", None) is None
