"""CLIP Workbench 图文多模态工作台: parse flags, build the services once, build the UI, launch.

    python demo.py                                   # ViT-B/32 (or the bundled mini model offline)
    python demo.py --lang zh --share --auth teacher:secret
    python demo.py --model /models/ViT-B-32.pt --library ~/my-library --offline

With no arguments it also runs as a Hugging Face Space (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT
are read by Gradio itself). If the model or the library cannot be opened, the app still
starts and explains what is wrong and how to fix it.
"""
from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
import threading

from core import build_workbench
from core.errors import LibraryError, ModelUnavailableError, UnknownModelError
from core.library.index import INDEX_KINDS
from core.settings import DEFAULT_MODEL

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
    p.add_argument("--offline", action="store_true", help="never try to download weights")
    p.add_argument("--captioner", default=None, help="vit-gpt2 | blip | a local save_pretrained() folder")
    p.add_argument("--translator", default=None, help="nllb | marian | a local save_pretrained() folder")
    p.add_argument("--lang", choices=["zh", "en"], default=os.environ.get("CLIP_WB_LANG") or None,
                   help="UI language at start (default: the browser's language)")
    p.add_argument("--host", default=None, help="e.g. 0.0.0.0 to serve the local network (default $GRADIO_SERVER_NAME or 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="default $GRADIO_SERVER_PORT or 7860")
    p.add_argument("--share", action="store_true", help="create a public *.gradio.live link (use with --auth)")
    p.add_argument("--auth", default=None, metavar="USER:PASS", help="require this login (recommended with --share)")
    p.add_argument("--index", default="auto", choices=INDEX_KINDS,
                   help="search index: exact, or FAISS ivf | hnsw | ivfpq (auto: exact for small libraries)")
    args = p.parse_args(argv)
    if args.auth is not None and (":" not in args.auth or not args.auth.split(":", 1)[0]):
        p.error("--auth must look like user:password")
    return args


def login(args: argparse.Namespace) -> tuple[str, str] | None:
    """--auth USER:PASS as the (user, password) pair launch() and the JSON API take."""
    return tuple(args.auth.split(":", 1)) if args.auth else None


def build(args: argparse.Namespace):
    """(Blocks, launch options): the full app with its JSON API at /api/..., or an explanation page
    if the model/library failed. The API takes the same --auth login as the app."""
    from ui import build_app, build_error_app, launch_options
    auth = login(args)
    try:
        wb = build_workbench(args.model, args.library, args.device, args.offline,
                             captioner=args.captioner, translator=args.translator, index=args.index,
                             background=True)
        atexit.register(wb.close)   # on shutdown, features_library.pth gets what the flusher has not written
    except STARTUP_ERRORS as e:
        log.error("cannot start the workbench: %s", e)
        return build_error_app(e, args.lang, model=args.model or DEFAULT_MODEL), launch_options(None, auth)
    if wb.notice:
        log.warning("%s", wb.notice)
    # An English-only CLIP translates Chinese queries: load the translator while the page opens.
    threading.Thread(target=wb.preload_translator, name="preload-translator", daemon=True).start()
    return build_app(wb, lang=args.lang), launch_options(wb, auth)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if args.share and not args.auth:
        log.warning("--share without --auth: anyone with the link can use the app and add or delete library "
                    "images. Add --auth user:password.")
    demo, options = build(args)
    auth = login(args)   # the same login guards the app and its JSON API (see build)
    from ui.i18n import AUTH_MESSAGE
    demo.launch(server_name=args.host, server_port=args.port, share=args.share or None, auth=auth,
                auth_message=AUTH_MESSAGE if auth else None, **options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
