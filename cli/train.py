"""`python -m core.train ...`: train the mini-CLIP from scratch, fine-tune a pretrained CLIP (--init),
or work on a run (plot, export, evaluate). The flags are made from core.lab.train.TrainConfig and
core.lab.finetune.FinetuneConfig (cli/config.py); the work is core.lab's.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from core.errors import WorkbenchError
from core.lab import finetune as _finetune
from core.lab import train as _train
from core.lab.finetune import FinetuneConfig, finetune, recall_table
from core.lab.pairs import evaluate_pairs, load_pairsets
from core.lab.train import TrainConfig, train
from core.models.mini import MiniEncoder, load_checkpoint, save_checkpoint
from core.settings import pick_runtime

from .config import config_parser

__all__ = ["main"]


def _train_parser() -> argparse.ArgumentParser:
    p = config_parser(TrainConfig, "python -m core.train", _train.__doc__)
    p.add_argument("--resume", default=None, help="a last.pt to continue from (its run settings are kept)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _command(argv: Sequence[str]) -> int:
    cmd, rest = argv[0], list(argv[1:])
    p = argparse.ArgumentParser(prog=f"python -m core.train {cmd}")
    if cmd == "plot":
        p.add_argument("run")
        args = p.parse_args(rest)
        from core.lab.plots import replot
        for path in replot(Path(args.run), pick_runtime("auto")):
            print(path)
        return 0
    if cmd == "export":
        p.add_argument("checkpoint")
        p.add_argument("out")
        p.add_argument("--bits", type=int, choices=(4, 8), default=None, help="quantised storage (default float32)")
        p.add_argument("--name", default=None)
        args = p.parse_args(rest)
        model, tokenizer, ckpt = load_checkpoint(Path(args.checkpoint))
        out = save_checkpoint(Path(args.out), model, tokenizer, args.name or ckpt["name"], ckpt["meta"], bits=args.bits)
        print(f"{out} ({out.stat().st_size / 1e6:.1f} MB)")
        return 0
    p.add_argument("checkpoint")
    p.add_argument("--data", default="shapes")
    p.add_argument("--split", default="test", choices=("val", "test"))
    p.add_argument("--json", default=None, help="also write the metrics here")
    args = p.parse_args(rest)
    model, tokenizer, ckpt = load_checkpoint(Path(args.checkpoint))
    runtime = pick_runtime("auto")
    size = model.config.image_size
    data = load_pairsets(args.data, size, ckpt.get("meta", {}).get("seed", 0), (0, 500, 1000), splits=(args.split,))
    metrics = evaluate_pairs(MiniEncoder(model, tokenizer, "eval", runtime), data[args.split])
    text = json.dumps(metrics, indent=1)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in ("plot", "export", "evaluate"):
            return _command(argv)
        if any(a == "--init" or a.startswith("--init=") for a in argv):   # fine-tune a pretrained CLIP
            return finetune_main(argv)
        args = vars(_train_parser().parse_args(argv))
        resume, progress = args.pop("resume"), not args.pop("no_progress")
        run = train(TrainConfig(**args), resume=resume, progress=progress)
        print(f"done: {run} (best.pt, log.csv, test_metrics.json)")
        return 0
    except (ValueError, OSError, WorkbenchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def finetune_main(argv: Sequence[str]) -> int:
    """`python -m core.train --init ...`: fine-tune, print Recall@K before and after. Errors -> exit 2."""
    parser = config_parser(FinetuneConfig, "python -m core.train --init MODEL", _finetune.__doc__)
    cfg = FinetuneConfig(**vars(parser.parse_args(list(argv))))
    report = finetune(cfg, progress=lambda row: print(
        f"epoch {row['epoch']}/{cfg.epochs}: loss {row['train_loss']:.4f}, val mean recall {row['val_mean_recall']:.1f}",
        flush=True))
    print(f"Recall@K on the held-out test split ({report['sizes']['test']} images), before -> after:")
    print(recall_table(report))
    print(f"model: {report['checkpoint']}\nreport: {Path(cfg.out) / 'report.md'}\nnote: {report['note']}")
    return 0
