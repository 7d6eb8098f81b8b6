"""Precision and recall of the safety filter on a labelled folder you supply.

    python benchmarks/bench_safety.py DIR [--model ViT-B/32] [--safety-concepts FILE] [--safety-head FILE]
                                          [--margin 0.02] [--device cpu]

DIR holds two folders, safe/ and unsafe/, of images (any depth). Each image is encoded once with
the model, as the library would, and judged by the same policy the app applies (core/safety):
zero-shot against the concept list, plus the classifier head when one is given. Prints one line
per setting: the configured margin first, then a sweep of margins, each with precision, recall
and the counts, so a teacher can see what a stricter or looser margin would cost on their own
pictures. Nothing is downloaded beyond the model itself (the cache and HF_ENDPOINT apply), and
no image leaves the machine.

What it measures is the filter with *this* model: the bundled mini model only knows coloured
shapes, so only a concept list in its words (e.g. "red circle") means anything with it; real
photos need real CLIP weights.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from core.errors import ImageError  # noqa: E402
from core.images import iter_image_files, load_image  # noqa: E402
from core.models import load_encoder  # noqa: E402
from core.safety import SafetyConfig, SafetyPolicy  # noqa: E402
from core.safety.judge import DEFAULT_MARGIN  # noqa: E402
from core.settings import pick_runtime  # noqa: E402

SWEEP = (-0.02, 0.0, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2)   # margins (cosine points) tried after the configured one


def encode_folder(encoder, folder: Path) -> tuple[torch.Tensor, list[str]]:
    """(embeddings [N, D], names) of the readable images under `folder`; unreadable ones are named."""
    images, names = [], []
    for path in iter_image_files([folder]):
        try:
            images.append(load_image(path, path.name))
            names.append(path.name)
        except ImageError as e:
            print(f"  unreadable: {e.name}: {e.reason}", file=sys.stderr)
    return encoder.encode_images(images), names


def counts(flags_safe: list[bool], flags_unsafe: list[bool]) -> dict:
    tp, fn = sum(flags_unsafe), len(flags_unsafe) - sum(flags_unsafe)
    fp, tn = sum(flags_safe), len(flags_safe) - sum(flags_safe)
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    return {"precision": precision, "recall": recall, "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def line(label: str, c: dict) -> str:
    return (f"{label}: precision {c['precision']:.3f} recall {c['recall']:.3f} "
            f"(tp {c['tp']}, fp {c['fp']}, fn {c['fn']}, tn {c['tn']})")


def measure(folder: Path, model: str, concepts: str | None = None, head: str | None = None,
            margin: float = DEFAULT_MARGIN, device: str = "cpu") -> list[str]:
    """The report's lines for the labelled `folder` (safe/ and unsafe/)."""
    for sub in ("safe", "unsafe"):
        if not (folder / sub).is_dir():
            raise SystemExit(f"{folder / sub} is not a folder: DIR must hold safe/ and unsafe/")
    encoder = load_encoder(model, pick_runtime(device))
    safe, _ = encode_folder(encoder, folder / "safe")
    unsafe, _ = encode_folder(encoder, folder / "unsafe")
    out = [f"{len(safe)} safe and {len(unsafe)} unsafe images, model {encoder.model_id}"]
    for m in (margin,) + tuple(x for x in SWEEP if x != margin):
        policy = SafetyPolicy(SafetyConfig(mode="standard", concepts=concepts, head=head, margin=m), encoder, folder)
        if m == margin:
            out.append(f"filter: {policy.describe()}")
            if policy.cannot_judge():
                out.append(f"note: {policy.cannot_judge()}")
        flagged = lambda vectors: [v.flagged for v in policy.verdicts(vectors)]   # noqa: E731
        out.append(line(f"margin {m:+.2f}{' (configured)' if m == margin else ''}",
                        counts(flagged(safe), flagged(unsafe))))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a folder with safe/ and unsafe/ inside")
    parser.add_argument("--model", default="ViT-B/32")
    parser.add_argument("--safety-concepts", default=None, help="a concept list (default: the built-in one)")
    parser.add_argument("--safety-head", default=None, help="a LAION-style classifier head file")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    for text in measure(args.folder, args.model, args.safety_concepts, args.safety_head, args.margin, args.device):
        print(text)


if __name__ == "__main__":
    main()
