"""CLIP workbench core 图文多模态工作台: encoders, the growing library, search, zero-shot, captions, training.

    from core import load_encoder, open_library, Workbench, build_workbench
    enc = load_encoder("ViT-B/32", device="cpu")          # or a path, a hub id, "mini"
    enc.encode_texts(["a cat"]), enc.encode_images([pil])  # float32 [N, D], L2-normalised, CPU
    lib = open_library("library", enc)                     # the growing image library
    wb = build_workbench("ViT-B/32", "library")            # every service behind one object

The front door is `Workbench` (core/workbench.py): every action takes its caller and applies
one policy (core/policy.py, core/access.py) and the class's safety policy (core/safety: what is
held for the teacher's review, which queries are refused, what each caller is shown); `Holder` (core/holder.py) is a server's one
workbench. Sub-packages: `models` (encoders and their registry), `library` (storage, ingest,
index, search, thumbnails), `language` (script detection, translation, captions, query planning),
`lab` (training, datasets, metrics, evaluation, plots), `scale` (indexing past one machine),
`hosting` (the Hub backup, ZeroGPU). Errors live in `core.errors`. No Gradio anywhere in core;
`python -m core` hands over to the command line in cli/ (docs/ARCHITECTURE.md has the layers).
"""
import warnings

# The `clip` package imports pkg_resources, which warns on every start; the pin setuptools<81 keeps it working.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)

from .errors import (ImageError, LabelError, LibraryError, ModelMismatchError, ModelUnavailableError,  # noqa: E402
                     QueryError, UnknownModelError, WorkbenchError)
from .lazy import lazy_attributes  # noqa: E402

# The public names below are imported on first use (core/lazy.py).
_LAZY = {"IngestReport": ".library.ingest", "Upload": ".library.ingest", "open_library": ".library.ingest",
         "Hit": ".library.search", "SearchQuery": ".library.search", "SearchResult": ".library.search",
         "Term": ".library.search", "parse_terms": ".library.search",
         "Entry": ".library.store", "Library": ".library.store",
         "Encoder": ".models", "available_models": ".models", "load_encoder": ".models",
         "Page": ".workbench", "Workbench": ".workbench", "build_workbench": ".workbench", "Holder": ".holder",
         "LiveConfig": ".lab.live", "LiveTrainer": ".lab.live",
         "Storage": ".hosting.sync", "storage": ".hosting.sync",
         "Monitor": ".monitor", "Health": ".health", "Snapshot": ".health", "prometheus_text": ".health"}

__getattr__ = lazy_attributes(__name__, _LAZY)

__all__ = ["load_encoder", "available_models", "open_library", "Workbench", "build_workbench", "Holder", "Encoder", "Library",
           "Entry", "Page", "SearchQuery", "SearchResult", "Hit", "Term", "parse_terms", "Upload", "IngestReport",
           "WorkbenchError",
           "ModelUnavailableError", "UnknownModelError", "ImageError", "LibraryError", "ModelMismatchError",
           "QueryError", "LabelError", "LiveConfig", "LiveTrainer", "Storage", "storage", "Monitor", "Health",
           "Snapshot", "prometheus_text"]
