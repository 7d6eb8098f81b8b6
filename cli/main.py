"""The command line, an adapter over core like ui/: python -m core {index,search,classify,library,caption,translate} ...

    python -m core index assets/samples
    python -m core search "a cat on a sofa" -k 5
    python -m core search "beach" --minus people
    python -m core search --image query.jpg
    python -m core search '"2:golden retriever" + photo.jpg - fruit'   # weighted terms, rclip's syntax
    python -m core classify photo.jpg --labels "cat,dog,小鸟" --templates ensemble80
    python -m core library stats|list|seed|remove ID|compact|verify|repair|reindex|build-index
    python -m core library near-duplicates [--threshold 0.94]     # one group per line, oldest id first

Every command takes --model, --library, --device, --runtime, --offline and --index.
`python -m core` runs `main` here (core/__main__.py only hands over); each command builds the
Workbench, calls it as the local user, and prints. A library an app serves to a class carries that
app's safety policy (safety.json beside it): `index` applies it too, so a flagged image added
from the command line waits for the teacher's review like an upload.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from core.access import LOCAL
from core.errors import EXPECTED_ERRORS, ImageError, LibraryError
from core.images import iter_image_files, load_image
from core.language.caption import CAPTIONERS, DEFAULT_CAPTIONER, CaptionSettings, Captioner
from core.language.query import caption_metadata
from core.language.translate import DEFAULT_TRANSLATOR, TRANSLATORS, Translator
from core.library.ann import EXACT_MAX_ROWS, INDEX_KINDS, IVFSQ_MIN_ROWS
from core.settings import DEFAULT_MODEL, DEFAULT_RUNTIME, RUNTIME_CHOICES, pick_runtime

# Everything above is light (no torch): `python -m core --help` answers at once. The engine
# (workbench, search, zero-shot) is imported by the commands that use it.

_EXPECTED = (*EXPECTED_ERRORS, ValueError)   # ValueError: a bad --device
USER = replace(LOCAL, surface="cli")          # whoever runs the command: the machine's own user, no quota


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="clip name (ViT-B/32, RN50, ...), checkpoint file, Hugging Face id or folder, mini or mini:PATH")
    p.add_argument("--library", default=None, help="library folder (default: ./library or $CLIP_WB_LIBRARY)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N")
    p.add_argument("--runtime", default=DEFAULT_RUNTIME, choices=RUNTIME_CHOICES,
                   help="what runs the encoder: torch | onnx (ONNX Runtime, CPU) | onnx-int8 (opt-in, checked "
                        "against fp32 on your library) | auto = onnx on a CPU, torch fp16 on CUDA "
                        f"(default {DEFAULT_RUNTIME}; $CLIP_WB_RUNTIME)")
    p.add_argument("--offline", action="store_true", help="never try to download weights")
    p.add_argument("--no-fallback", action="store_true", help="fail instead of using the bundled mini model")
    p.add_argument("--index", default="auto", choices=INDEX_KINDS,
                   help="search index: exact, or FAISS ivf | hnsw | ivfpq | ivfsq; auto = exact below "
                        f"{EXACT_MAX_ROWS:,} images, ivf up to {IVFSQ_MIN_ROWS:,}, ivfsq above")


def _workbench(args):
    from core.safety import recorded
    from core.settings import default_paths
    from core.workbench import build_workbench
    wb = build_workbench(args.model, args.library, args.device, args.offline, fallback=not args.no_fallback,
                         captioner=getattr(args, "captioner", None), translator=getattr(args, "translator", None),
                         index=args.index, runtime=args.runtime,
                         safety=recorded(args.library or default_paths().library))   # the app's policy, if it serves it
    if wb.notice:
        print(f"note: {wb.notice}", file=sys.stderr)
    return wb


def cmd_index(args) -> int:
    if args.engine == "ray" or args.from_shards or args.from_embeddings:
        from .scale import index_scaled   # loaded (and Ray imported) only on this path
        return index_scaled(args)
    if not args.paths:
        raise LibraryError("Give the image files or folders to index")
    from core.library.ingest import StageTimes
    wb = _workbench(args)
    files = list(iter_image_files(args.paths))
    missing = [p for p in args.paths if not Path(p).exists()]
    stages = StageTimes()
    with tqdm(total=len(files), unit="img", desc="indexing", disable=args.quiet) as bar:
        def step(n: int) -> None:   # the bar's rate is images/s; its postfix names the stage that bounds it
            bar.set_postfix_str(stages.describe(), refresh=False)
            bar.update(n)
        report = wb.add(files, progress=step, caption=args.caption, batch_size=args.batch_size, caller=USER,
                        workers=args.workers, stages=stages)
    wb.flush()   # features_library.pth now holds every image
    print("\n".join(report.lines(report.seconds, len(wb), missing)))
    return 1 if missing else 0


def _query_text(words: list[str]) -> str:
    """The query as one string: one argument as it is ('"2:red circle" - blue'); several, as rclip takes
    them (`"2:golden retriever" + ./pool.jpg - fruit`: the shell took the quotes), each quoted again
    where it holds a space, so a weighted phrase stays one term; plain words join into one phrase."""
    if len(words) <= 1:
        return words[0] if words else ""
    out, phrase = [], []
    for word in words + ["+"]:
        if word in ("+", "-"):
            if phrase:
                out.append(" ".join(phrase) if len(phrase) > 1 or " " not in phrase[0] else f'"{phrase[0]}"')
            out.append(word)
            phrase = []
        else:
            phrase.append(word)
    return " ".join(out[:-1])


def cmd_search(args) -> int:
    wb = _workbench(args)
    from core.library.search import SearchQuery, parse_terms
    image = load_image(args.image) if args.image else None
    q = SearchQuery(terms=parse_terms(_query_text(args.query)), image=image, minus=args.minus, k=args.k,
                    image_weight=args.image_weight, threshold=args.threshold)
    if args.text_weight != 1:
        q.terms = [replace(t, weight=t.weight * args.text_weight) if t.text is not None else t for t in q.terms]
    result = wb.search(q, USER)
    if result.note:
        print(f"note: {result.note}")
    if result.plan:
        print(f"plan: {result.plan}")
    if result.text_used and result.text_used != _query_text(args.query).strip():
        print(f"query used: {result.text_used!r}")
    if not result.hits:
        print("no results" + (" (the library is empty: add images with `python -m core index PATH`)" if not len(wb) else ""))
    for rank, hit in enumerate(result.hits, 1):
        print(f"{rank:>3}  {hit.score:.4f}  {hit.path}  ({hit.name}, id {hit.id})")
    return 0


def cmd_classify(args) -> int:
    wb = _workbench(args)
    from core.zeroshot import load_labelset, load_templates
    load_labelset(args.labels, args.lang), load_templates(args.templates, args.lang)   # bad input fails before any image
    status = 0
    for path in args.images:
        try:
            top, note = wb.classify(load_image(path), args.labels, args.templates, args.lang, top_k=args.top, caller=USER)
        except ImageError as e:
            print(f"{path}: error: {e.reason}")
            status = 1
            continue
        print(path + (f"  ({note})" if note else ""))
        for label, p in top:
            print(f"  {p * 100:6.2f}%  {label}")
    return status


def cmd_library(args) -> int:
    if args.action == "reindex":
        bar = tqdm(unit="img", desc="re-encoding")
        from core.workbench import reindex_library
        lib = reindex_library(args.library, args.model, args.device, args.offline, progress=bar.update,
                              runtime=args.runtime)
        print(f"re-encoded {len(lib)} images with {lib.model_id}")
        return 0
    wb = _workbench(args)
    if args.action == "stats":
        print(json.dumps(wb.stats(), indent=2, ensure_ascii=False))
    elif args.action == "list":
        for e in wb.entries(args.offset, args.limit):
            print(f"{e.rowid:>6}  {e.id}  {e.name}  {e.path.relative_to(wb.root)}")
    elif args.action == "remove":
        if not args.ids:
            raise LibraryError("Give the id(s) to remove, as shown by `library list`")
        n = len(wb.remove(args.ids, USER))
        wb.flush()
        print(f"removed {n}; library now holds {len(wb)} images")
    elif args.action == "compact":
        wb.compact(USER)
        print(f"compacted: {len(wb)} images in {wb.root / 'features_library.pth'}")
    elif args.action == "seed":
        report = wb.seed(caller=USER)
        wb.flush()
        print(f"sample images: {report.summary()}; library now holds {len(wb)} images")
    elif args.action == "repair":
        print(json.dumps(wb.repair(USER), indent=2, ensure_ascii=False))
        wb.flush()
    elif args.action == "build-index":
        start = time.perf_counter()
        kind = wb.build_index(None if args.index == "auto" else args.index, USER)
        print(f"{kind} index over {len(wb)} images built in {time.perf_counter() - start:.1f}s"
              + (" (exact search needs no index)" if kind == "exact" else ""))
    elif args.action == "near-duplicates":
        for group in wb.near_duplicates(args.threshold, USER):
            print(" ".join(e.id for e in group))
    elif args.action == "verify":
        report = wb.verify(deep=args.deep)
        print(json.dumps(report, indent=2))
        return 0 if report["healthy"] else 1
    return 0


def cmd_caption(args) -> int:
    """Caption images without loading a CLIP model or opening a library."""
    runtime = pick_runtime(args.device)
    settings = CaptionSettings(num_beams=args.beams, max_new_tokens=args.max_tokens)
    captioner = Captioner(args.captioner, runtime, settings, offline=args.offline)
    translator = None if args.translator == "none" else Translator(args.translator, runtime, offline=args.offline)
    good, status, zh_error = [], 0, None
    for path in iter_image_files(args.images):
        try:
            good.append((path, load_image(path)))
        except ImageError as e:
            print(f"skipped {e}", file=sys.stderr)
            status = 1
    step = captioner.settings.batch_size * 4
    for i in range(0, len(good), step):
        chunk = good[i:i + step]
        for (path, _), meta in zip(chunk, caption_metadata([im for _, im in chunk], captioner, translator)):
            print(f"{path}\n  en: {meta['caption_en']}\n  zh: {meta['caption_zh'] or '-'}")
            zh_error = zh_error or meta.get("caption_zh_error")
    if zh_error:
        print(f"note: no Chinese captions: {zh_error}", file=sys.stderr)
        status = 1
    return status


def cmd_translate(args) -> int:
    translator = Translator(args.translator, pick_runtime(args.device), offline=args.offline)
    for text in translator.translate(args.texts, to=args.to):
        print(text)
    return 0


def _add_scale(p: argparse.ArgumentParser) -> None:
    """index past one machine (core/scale): a Ray job writes embedding shards, merged in one step."""
    p.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="ray: decode on Ray tasks, encode on Ray actors, write Parquet shards, merge them")
    p.add_argument("--ray-address", default=None,
                   help="with --engine ray: the cluster (HOST:6379 of `ray start --head`, or auto); "
                        "default: a local Ray instance sized to this machine")
    p.add_argument("--actors", type=int, default=None,
                   help="encoder actors on the CPU (default 1); on CUDA one per GPU. They build the encoder as "
                        "--device and --runtime say (auto: CUDA when the cluster has GPUs)")
    p.add_argument("--actor-cpus", type=float, default=1.0, help="CPUs per CPU encoder actor")
    p.add_argument("--part-size", type=int, default=1000, help="images per shard (the unit of resume)")
    p.add_argument("--shards", default=None, help="shard folder (default: LIBRARY/shards/job-<hash of the sources>)")
    p.add_argument("--no-merge", action="store_true", help="only write the shards; merge later with --from-shards")
    p.add_argument("--from-shards", default=None, metavar="DIR", help="merge the shards in DIR (no job)")
    p.add_argument("--from-embeddings", default=None, metavar="DIR",
                   help="import clip-retrieval output (img_emb/*.npy + metadata/*.parquet) made by --model, by reference")
    p.add_argument("--by-reference", action="store_true",
                   help="merge: keep each image where it is (path + SHA-256) instead of copying it into the library")


def _positive(text: str) -> int:
    value = int(text) if text.strip().isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, not {text!r} / 需要至少为 1 的整数")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="CLIP workbench 图文多模态工作台")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="add image files and folders to the library")
    p.add_argument("paths", nargs="*", help="image files and folders; with --engine ray also list files "
                                            "(.txt/.csv/.parquet of paths or URLs) and WebDataset .tar shards")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=_positive, default=None,
                   help="decode workers (default: the CPU count, at most 8); the progress bar names the stage "
                        "that bounds the rate (decode, encode or write); with --engine ray: decode tasks running "
                        "at once (default: as many as the cluster's CPUs allow)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--caption", action="store_true",
                   help="also caption each new image (English + Chinese) and keep the captions in the library")
    p.add_argument("--captioner", default="vit-gpt2", help="with --caption: vit-gpt2 | blip | a save_pretrained() folder")
    p.add_argument("--translator", default="nllb", help="with --caption: nllb | marian | a save_pretrained() folder")
    _add_scale(p)
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="text→image / image→image search; weighted terms as rclip takes them",
                       epilog='query syntax: terms joined by " + " or " - ", each a text, a library image id '
                              '(12+ hex digits) or an image file; "W:term" weighs it, e.g. '
                              '\'"2:golden retriever" + photo.jpg - fruit\'')
    p.add_argument("query", nargs="*", default=[],
                   help='text, or weighted terms: \'"2:red circle" - blue\' (one argument, or rclip-style several)')
    p.add_argument("--image", help="query image (combined with the text when both are given)")
    p.add_argument("--minus", action="append", default=[], help="negative term(s), comma separated; repeatable")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--text-weight", type=float, default=1.0, help="multiplies the weight of every text term")
    p.add_argument("--image-weight", type=float, default=1.0)
    p.add_argument("--threshold", type=float, default=None, help="minimum cosine score")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("classify", help="zero-shot classification")
    p.add_argument("images", nargs="+")
    p.add_argument("--labels", required=True, help='"cat,dog,小鸟" or imagenet1k | cifar10 | cifar100')
    p.add_argument("--lang", default="en", choices=["en", "zh"], help="language of built-in label sets")
    p.add_argument("--templates", default="single", help='bare | single | selected7 | ensemble80 | zh | cifar | "a photo of a {c}."')
    p.add_argument("--top", type=int, default=5)
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("library", help="housekeeping")
    p.add_argument("action", choices=["stats", "list", "seed", "remove", "compact", "verify", "repair", "reindex",
                                       "build-index", "near-duplicates"])
    p.add_argument("ids", nargs="*", help="ids for remove")
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--deep", action="store_true", help="verify: also re-hash every image")
    p.add_argument("--threshold", type=float, default=None,
                   help="near-duplicates: the cosine from which two images count as near-duplicates (default 0.94)")
    p.set_defaults(func=cmd_library)

    p = sub.add_parser("caption", help="caption images in English and Chinese")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--captioner", default=DEFAULT_CAPTIONER,
                   help=f"{' | '.join(CAPTIONERS)} | a save_pretrained() directory (default {DEFAULT_CAPTIONER})")
    p.add_argument("--translator", default=DEFAULT_TRANSLATOR, help="nllb | marian | PATH | none (English only)")
    p.add_argument("--beams", type=int, default=CaptionSettings.num_beams, help="beam search width")
    p.add_argument("--max-tokens", type=int, default=CaptionSettings.max_new_tokens, help="caption length cap")
    p.set_defaults(func=cmd_caption)

    p = sub.add_parser("translate", help="translate between Chinese and English")
    p.add_argument("texts", nargs="+", help="texts to translate (quote each one)")
    p.add_argument("--to", required=True, choices=["en", "zh"], help="target language")
    p.add_argument("--translator", default=DEFAULT_TRANSLATOR,
                   help=f"{' | '.join(TRANSLATORS)} | a save_pretrained() directory (default {DEFAULT_TRANSLATOR})")
    p.set_defaults(func=cmd_translate)

    for p in sub.choices.values():   # every command takes the common flags
        _add_common(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _EXPECTED as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
