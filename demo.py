"""CLIP Workbench 图文多模态工作台: parse flags, build the services once, build the UI, launch.

    python demo.py                                   # ViT-B/32 (or the bundled mini model offline)
    python demo.py --lang zh --share --admin teacher:secret --auth ann:pw1 --auth bob:pw2
    python demo.py --model /models/ViT-B-32.pt --library ~/my-library --offline

With no arguments it also runs as a Hugging Face Space (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT
are read by Gradio itself). If the model or the library cannot be opened, the app still
starts and explains what is wrong and how to fix it. For a class on one link: students log in
with --auth (repeatable), the teacher with --admin; on a Space, put the logins in the secrets
CLIP_WB_AUTH / CLIP_WB_ADMIN ("user:pass,user:pass") or a file named by CLIP_WB_AUTH_FILE.
With --mcp (CLIP_WB_MCP=1 on a Space) AI assistants use the library through MCP tools at
/gradio_api/mcp/ (ui/mcp.py), under the same logins and rules.
Others reaching the app turn the safety policy on (--safety standard: flagged uploads wait for the
teacher's review; CLIP_WB_SAFETY on a Space).
On a Space with a persistent disk the library and the model cache live in /data; without one,
--sync-to-hub USER/DATASET keeps the library in a Hugging Face dataset (core/hosting/sync.py).
"""
from __future__ import annotations

import argparse
import atexit
import logging
import os
import signal
import sys
import threading

from core import build_workbench
from core.access import Access, Accounts, Limits
from core.errors import LibraryError, ModelUnavailableError, UnknownModelError
from core.library.index import INDEX_KINDS
from core.safety import MODES, SafetyConfig, default_mode
from core.settings import DEFAULT_MODEL, DEFAULT_RUNTIME, RUNTIME_CHOICES, default_paths, persistent_root

log = logging.getLogger("demo")

# What can go wrong while opening the model and the library; each is explained in the UI.
STARTUP_ERRORS = (ModelUnavailableError, UnknownModelError, LibraryError, ValueError, OSError)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="CLIP Workbench 图文多模态工作台 (Gradio app)")
    p.add_argument("--model", default=None,
                   help="clip name (ViT-B/32, RN50, ...), checkpoint file, Hugging Face id or folder, mini or mini:PATH "
                        "(default $CLIP_WB_MODEL or ViT-B/32)")
    p.add_argument("--library", default=None, help="library folder (default ./library or $CLIP_WB_LIBRARY)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N")
    p.add_argument("--runtime", default=DEFAULT_RUNTIME, choices=RUNTIME_CHOICES,
                   help="torch | onnx (ONNX Runtime, CPU) | onnx-int8 (opt-in, checked against fp32 on the library) | "
                        f"auto = onnx on a CPU, torch fp16 on CUDA (default {DEFAULT_RUNTIME}; $CLIP_WB_RUNTIME)")
    p.add_argument("--offline", action="store_true", help="never try to download weights")
    p.add_argument("--no-seed", action="store_true",
                   help="start with an empty library (by default a first start adds the bundled sample images)")
    p.add_argument("--captioner", default=None, help="vit-gpt2 | blip | a local save_pretrained() folder")
    p.add_argument("--translator", default=None, help="nllb | marian | a local save_pretrained() folder")
    p.add_argument("--lang", choices=["zh", "en"], default=os.environ.get("CLIP_WB_LANG") or None,
                   help="UI language at start (default: the browser's language)")
    p.add_argument("--host", default=None, help="e.g. 0.0.0.0 to serve the local network (default $GRADIO_SERVER_NAME or 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="default $GRADIO_SERVER_PORT or 7860")
    p.add_argument("--share", action="store_true", help="create a public *.gradio.live link (needs --auth/--admin)")
    p.add_argument("--share-public", action="store_true",
                   help="allow --share without any login: anyone with the link may delete images")
    p.add_argument("--auth", action="append", default=[], metavar="USER:PASS",
                   help="a student login (repeatable; also $CLIP_WB_AUTH, $CLIP_WB_AUTH_FILE)")
    p.add_argument("--admin", action="append", default=[], metavar="USER:PASS",
                   help="a teacher login: may delete, compact, repair, re-index and seed (repeatable; also $CLIP_WB_ADMIN)")
    p.add_argument("--quota-mb", type=float, default=Limits.quota_mb,
                   help=f"upload quota per student (per browser session without logins), MiB (default {Limits.quota_mb:g})")
    p.add_argument("--library-budget-mb", type=float, default=Limits.budget_mb,
                   help=f"disk budget of the library's images, MiB (default {Limits.budget_mb:g})")
    p.add_argument("--index", default="auto", choices=INDEX_KINDS,
                   help="search index: exact, or FAISS ivf | hnsw | ivfpq (auto: exact for small libraries)")
    p.add_argument("--sync-to-hub", default=os.environ.get("CLIP_WB_SYNC_TO_HUB") or None, metavar="DATASET_REPO",
                   help="back the library up to this Hugging Face dataset (created private; needs an HF_TOKEN with "
                        "write access) and restore it from there when the local library holds no image, e.g. after "
                        "a Space restart; a repo holding another library is never pushed to (default "
                        "$CLIP_WB_SYNC_TO_HUB)")
    p.add_argument("--sync-public", action="store_true", default=os.environ.get("CLIP_WB_SYNC_PUBLIC") == "1",
                   help="allow --sync-to-hub to push to a public dataset: anyone can then download the images "
                        "(default: only a private one; $CLIP_WB_SYNC_PUBLIC=1)")
    p.add_argument("--sync-every", type=float, default=float(os.environ.get("CLIP_WB_SYNC_EVERY") or 5),
                   metavar="MINUTES", help="minutes between pushes with --sync-to-hub (default 5; $CLIP_WB_SYNC_EVERY)")
    p.add_argument("--mcp", action="store_true", default=os.environ.get("CLIP_WB_MCP") == "1",
                   help="also serve MCP tools for AI assistants at /gradio_api/mcp/ (search_library, classify_image, "
                        "caption_image, library_stats, add_image), with the same logins (HTTP Basic) and rules as the "
                        "page; needs gradio[mcp] (default $CLIP_WB_MCP=1)")
    p.add_argument("--safety", choices=MODES, default=None,
                   help="off | standard (flagged uploads wait for the teacher's review, unsafe queries are refused) | "
                        "strict (every student upload waits for the teacher); default $CLIP_WB_SAFETY, else standard "
                        "when others reach the app (--share, --auth/--admin, a Space) and off on a private start")
    p.add_argument("--safety-concepts", default=os.environ.get("CLIP_WB_SAFETY_CONCEPTS") or None, metavar="FILE",
                   help="UTF-8 file, one unsafe concept per line (Chinese or English), replacing the built-in list "
                        "assets/safety/concepts.txt ($CLIP_WB_SAFETY_CONCEPTS)")
    p.add_argument("--safety-head", default=os.environ.get("CLIP_WB_SAFETY_HEAD") or None, metavar="FILE",
                   help="a LAION-style NSFW classifier head over this model's embeddings (512-d for ViT-B/32, 768-d "
                        "for ViT-L/14), used beside the zero-shot list ($CLIP_WB_SAFETY_HEAD)")
    args = p.parse_args(argv)
    try:
        args.access = access(args)
        args.safety_config = safety(args)
    except (ValueError, OSError) as e:
        p.error(str(e))
    return args


def access(args: argparse.Namespace) -> Access:
    """Logins (flags + environment / secrets file) and limits: one policy for the UI and the JSON API."""
    return Access(Accounts.parse(args.auth, args.admin), Limits(quota_mb=args.quota_mb, budget_mb=args.library_budget_mb))


def safety(args: argparse.Namespace) -> SafetyConfig:
    """The class's safety policy: on by default whenever others reach the app (core/safety)."""
    shared = bool(args.share or args.share_public or not args.access.open or os.environ.get("SPACE_ID"))
    mode = args.safety or default_mode(shared)
    return SafetyConfig(mode=mode, shared=shared, concepts=args.safety_concepts, head=args.safety_head)


def build(args: argparse.Namespace):
    """(Blocks, launch options): the full app with its JSON API at /api/..., or an explanation page
    if the model/library failed. The API takes the same logins, roles and quotas as the app."""
    from ui import build_app, build_error_app, launch_options
    try:
        wb = open_workbench(args)
    except STARTUP_ERRORS as e:
        log.error("cannot start the workbench: %s", e)
        return build_error_app(e, args.lang, model=args.model or DEFAULT_MODEL), launch_options(None, args.access, args.lang)
    from core.hosting.sync import storage
    if (warning := storage(wb.root).warning) is not None:
        log.warning("%s", warning)
    # An English-only CLIP translates Chinese queries: load the translator while the page opens.
    threading.Thread(target=wb.preload_translator, name="preload-translator", daemon=True).start()
    return (build_app(wb, lang=args.lang, access=args.access, mcp=args.mcp),
            launch_options(wb, args.access, args.lang, mcp=args.mcp))


def open_workbench(args: argparse.Namespace):
    """The workbench of the app: its library restored first from --sync-to-hub's dataset when it holds
    no image, seeded on a first start, its backup started. Raises STARTUP_ERRORS."""
    sync = hub_sync(args)   # before the library opens
    wb = build_workbench(args.model, args.library, args.device, args.offline,
                         captioner=args.captioner, translator=args.translator, index=args.index, runtime=args.runtime,
                         background=True, access=args.access,   # the policy the page and the JSON API apply
                         safety=args.safety_config)
    wb.safety.record()   # the command line applies the same policy to what it adds to this library
    # Registered after sync.close, so it runs before it (atexit runs the last registered first): at exit
    # features_library.pth gets what the flusher has not written, then that state is pushed.
    _on_exit(wb.close)
    if wb.notice:
        log.warning("%s", wb.notice)
    if not len(wb) and not args.no_seed:   # a first start: something to search at once
        if sync is not None and sync.paused:   # the dataset may hold the class's library: add nothing to push over it
            log.warning("empty library: no sample images while the backup to %s waits (see above)", sync.repo_id)
        else:
            log.info("empty library: seeded with the bundled sample images (%s; --no-seed starts empty)", wb.seed().summary())
    if sync is not None:
        sync.start()        # pushes now, then every --sync-every minutes; trouble is shown, never fatal
    return wb


def hub_sync(args: argparse.Namespace):
    """--sync-to-hub: a HubSync of the library, restored now if it holds no image (None without the flag)."""
    if not args.sync_to_hub:
        return None
    from core.hosting.sync import HubSync
    sync = HubSync(args.library or default_paths().library, args.sync_to_hub, every=args.sync_every,
                   allow_public=args.sync_public)
    sync.restore()
    # Registered before wb.close, so it runs after it: the library is flushed, then pushed once more here.
    _on_exit(sync.close)
    return sync


_closers: list = []


def _on_exit(fn) -> None:
    """Run `fn` at exit: from main() once the server stops (Ctrl-C, SIGTERM), while thread pools still
    work (huggingface_hub's LFS upload needs them), else by atexit as the fallback."""
    _closers.append(fn)
    atexit.register(fn)


def close_all() -> None:
    """The library's flush, then its last push: what atexit would run, in the same order, now."""
    while _closers:
        fn = _closers.pop()
        atexit.unregister(fn)   # done here: atexit need not run it again
        try:
            fn()
        except Exception:   # noqa: BLE001  one closer failing must not skip the others
            log.exception("closing %s failed", getattr(fn, "__qualname__", fn))


def prepare_space() -> None:
    """On a Hugging Face Space: Hugging Face's own caches on the persistent disk when there is one, the
    model calls under spaces.GPU on ZeroGPU, and a restart (SIGTERM) running the atexit flush and push.
    Runs before build(): on ZeroGPU, install() imports `spaces`, which must patch torch before the
    runtime is picked (CUDA fp16, not the CPU) and hook Gradio's launch() before it is called."""
    from core.hosting.zerogpu import install
    if persistent_root() is not None:
        os.environ.setdefault("HF_HOME", str(default_paths().cache / "huggingface"))
    if install():
        log.info("ZeroGPU: model calls run under spaces.GPU")
    if os.environ.get("SPACE_ID") and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    prepare_space()   # first: nothing may pick a runtime, build a model or launch before ZeroGPU's install()
    if args.share and args.access.open:
        if not args.share_public:
            log.error("--share without --auth/--admin: anyone with the link could delete library images and fill "
                      "the disk. Add --admin teacher:PASS (and --auth student:PASS), or --share-public on purpose.")
            return 2
        log.warning("--share-public: anyone with the link can use the app and add or delete library images.")
    demo, options = build(args)   # options carry the login: the same one guards the app and its JSON API
    # quiet: Gradio's own hint says `share=True` in `launch()`; this app's way is the --share flag
    demo.launch(server_name=args.host, server_port=args.port, share=args.share or None, quiet=True,
                prevent_thread_lock=True, **options)
    print(console_hint(demo.local_url, demo.share_url), flush=True)
    if args.mcp:   # Gradio only records a failed MCP start: say it where the teacher looks
        from ui.mcp import mcp_problem
        if (problem := mcp_problem(demo)) is not None:
            log.warning("%s", problem)
    try:
        demo.block_thread()   # returns on Ctrl-C / close; a SIGTERM's SystemExit passes through
    finally:
        close_all()
    return 0


def console_hint(local_url: str, share_url: str | None) -> str:
    """What the console says once the app is up, in the README's own terms (flags, not launch())."""
    lines = [f"* Running on {local_url}"]
    if share_url:
        lines.append(f"* Public link for the class: {share_url}")
    else:
        lines.append("* To share with a class: python demo.py --share --admin teacher:PASS --auth student:PASS "
                     "(README: \"Hugging Face Space / sharing with a class\")")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
