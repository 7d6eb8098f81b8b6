"""`python -m core.evaluate zeroshot|retrieval ...`: zero-shot accuracy and retrieval Recall@K of any
model on a data set on disk (the work and the report are core.lab.evaluate's; its docstring lists
the options)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from core.errors import DatasetError, LabelError, ModelUnavailableError, UnknownModelError
from core.lab import evaluate as _evaluate
from core.lab.datasets import read_classification, read_retrieval
from core.lab.evaluate import DEFAULT_WORKERS, Progress, evaluate_retrieval, evaluate_zeroshot, to_markdown
from core.models import load_encoder
from core.settings import DEFAULT_MODEL, pick_runtime

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m core.evaluate", description=_evaluate.__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="task", required=True)
    zs = sub.add_parser("zeroshot", help="zero-shot classification accuracy")
    rt = sub.add_parser("retrieval", help="image-text retrieval Recall@K and mAP@K")
    zs.add_argument("--layout", default="auto", choices=("auto", "imagenet", "folders"))
    zs.add_argument("--ground-truth", type=Path, help="ImageNet ground-truth file (default: looked for beside --data)")
    zs.add_argument("--labels", default="auto", help="auto, imagenet1k, cifar10, cifar100 or 'cat, dog, ...'")
    zs.add_argument("--lang", default="en", choices=("en", "zh"))
    zs.add_argument("--templates", default="ensemble80", help="bare, single, selected7, ensemble80, zh, cifar or '... {c} ...'")
    rt.add_argument("--format", default="auto", choices=("auto", "karpathy", "flickr8k"))
    rt.add_argument("--split", default="test", choices=("test", "val", "train", "all"))
    rt.add_argument("--image-root", type=Path, help="folder the image file names are relative to")
    for s in (zs, rt):
        s.add_argument("--data", type=Path, required=True, help="dataset folder (or Karpathy JSON file)")
        s.add_argument("--model", default=DEFAULT_MODEL, help="model name, checkpoint file or HF id / folder")
        s.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
        s.add_argument("--offline", action="store_true", help="never download weights")
        s.add_argument("--batch-size", type=int, default=64)
        s.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="image decoding workers")
        s.add_argument("--decode", default="processes", choices=("processes", "threads"),
                       help="decode in worker processes (fastest) or threads")
        s.add_argument("--limit", type=int, help="evaluate only N evenly spaced images")
        s.add_argument("--out", type=Path, help="write the JSON report here")
    return p


def _run(args, runtime, progress: Progress) -> dict:
    encoder = load_encoder(args.model, runtime, offline=args.offline)
    common = dict(batch_size=args.batch_size, workers=args.workers, limit=args.limit, progress=progress,
                  decode=args.decode)
    if args.task == "zeroshot":
        data = read_classification(args.data, args.layout, args.ground_truth)
        return evaluate_zeroshot(encoder, data, args.labels, args.lang, args.templates, **common)
    return evaluate_retrieval(encoder, read_retrieval(args.data, args.format, args.split, args.image_root), **common)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 for a usage / data / model problem)."""
    args = _parser().parse_args(argv)
    try:
        runtime = pick_runtime(args.device)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        bar = bar or tqdm(total=total, unit="img", file=sys.stderr)
        bar.update(done - bar.n)

    try:
        report = _run(args, runtime, progress)
    except (DatasetError, LabelError, ModelUnavailableError, UnknownModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if bar:
            bar.close()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    print(to_markdown(report))
    return 0
