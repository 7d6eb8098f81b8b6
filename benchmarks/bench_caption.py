"""Latency of captioning (ViT-GPT2, BLIP) and zh<->en translation (NLLB, Marian).

    python benchmarks/bench_caption.py [--vit-gpt2 DIR] [--blip DIR] [--nllb DIR] [--marian DIR]

Each model is read from a local save_pretrained() directory given by flag or environment
variable (CLIP_WB_VITGPT2_DIR, CLIP_WB_BLIP_DIR, CLIP_WB_NLLB_DIR, CLIP_WB_MARIAN_DIR; the
Marian one holds opus-mt-zh-en/ and opus-mt-en-zh/). A model not given is replaced by a
tiny random model with the same architecture and loaders (tests/hf_tiny_text.py), and its
rows say "tiny": those numbers measure the plumbing, not the real model's latency.

Per model: load time, then ms per item one at a time (the naive baseline) and batched,
with the batched/one-by-one ratio measured in the same run; for translation also a cached
repeat. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image  # noqa: E402

from core.language.caption import CaptionSettings, Captioner  # noqa: E402
from core.errors import ImageError  # noqa: E402
from core.images import iter_image_files, load_image
from core.settings import ASSETS_DIR, PROJECT_ROOT, pick_runtime  # noqa: E402
from core.language.translate import TranslateSettings, Translator  # noqa: E402

QUERIES_ZH = ["会飞的猫", "海滩上的一只狗", "两个人骑自行车", "白色背景上的红色圆形", "雪山下的小木屋",
              "一碗热气腾腾的面条", "夜晚城市的街道", "穿宇航服的人", "桌子上的苹果", "在草地上奔跑的马",
              "一座古老的石桥", "下雨天的红伞"]
CAPTIONS_EN = ["a cat sitting on a couch", "a dog running on the beach", "two people riding bikes down a street",
               "a red circle on a white background", "a small cabin below a snowy mountain",
               "a bowl of hot noodles", "a city street at night", "a person in a space suit",
               "an apple on a wooden table", "a horse running on the grass", "an old stone bridge over a river",
               "a red umbrella in the rain"]


def _images(n: int) -> list[Image.Image]:
    """The sample photos when present (real sizes and content), else synthetic images."""
    found = []
    for folder in (ASSETS_DIR / "samples", PROJECT_ROOT.parent / "shared" / "data" / "samples"):
        for path in iter_image_files([folder]) if folder.is_dir() else []:
            try:
                found.append(load_image(path))
            except ImageError:
                continue
        if found:
            break
    found = found or [Image.new("RGB", (320 + 16 * i, 240), (30 * i % 255, 120, 200)) for i in range(n)]
    return [found[i % len(found)] for i in range(n)]


def _timed(fn, repeats: int) -> float:
    """Median seconds of fn() over `repeats` runs (after one warm-up run)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _source(flag: str | None, env: str, build, tmp: Path, label: str) -> tuple[str, str]:
    given = flag or os.environ.get(env)
    if given and Path(given).is_dir():
        return given, "real"
    return str(build(tmp / label)), "tiny"


def bench_captioner(name: str, path: str, weights: str, runtime, args) -> list[tuple]:
    settings = CaptionSettings(num_beams=args.beams, batch_size=args.batch)
    cap = Captioner(path, runtime, settings)
    start = time.perf_counter()
    cap.load()
    load_s = time.perf_counter() - start
    images = _images(args.batch)
    single = _timed(lambda: [cap.caption([im]) for im in images], args.repeats) / len(images)
    batched = _timed(lambda: cap.caption(images), args.repeats) / len(images)
    return [(name, weights, "caption", f"load {load_s:.1f} s", "one by one", single, 1.0),
            (name, weights, "caption", "", f"batch of {len(images)}", batched, batched / single)]


def bench_translator(name: str, path: str, weights: str, runtime, args) -> list[tuple]:
    rows = []
    for to, texts in (("en", QUERIES_ZH), ("zh", CAPTIONS_EN)):
        settings = TranslateSettings(num_beams=args.beams, batch_size=len(texts), cache_size=0)
        tr = Translator(path, runtime, settings)
        start = time.perf_counter()
        tr.load(to)
        load_s = time.perf_counter() - start
        single = _timed(lambda: [tr.translate([t], to=to) for t in texts], args.repeats) / len(texts)
        batched = _timed(lambda: tr.translate(texts, to=to), args.repeats) / len(texts)
        cached = Translator(path, runtime, TranslateSettings(num_beams=args.beams))
        cached._lazy = tr._lazy  # share the loaded model; only the cache differs
        cached.translate(texts, to=to)
        hit = _timed(lambda: cached.translate(texts, to=to), args.repeats) / len(texts)
        task = f"translate ->{to}"
        rows += [(name, weights, task, f"load {load_s:.1f} s", "one by one", single, 1.0),
                 (name, weights, task, "", f"batch of {len(texts)}", batched, batched / single),
                 (name, weights, task, "", "cached repeat", hit, hit / single)]
    return rows


def _table(rows: list[tuple]) -> str:
    out = ["| model | weights | task | load | mode | ms / item | vs one by one |", "|---|---|---|---|---|---:|---:|"]
    out += [f"| {m} | {w} | {t} | {ld} | {mode} | {s * 1e3:.2f} | {r:.3f}x |" for m, w, t, ld, mode, s, r in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    from tests.hf_tiny_text import (make_tiny_blip_dir, make_tiny_marian_dir, make_tiny_nllb_dir,
                                    make_tiny_vit_gpt2_dir)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for flag in ("vit-gpt2", "blip", "nllb", "marian"):
        p.add_argument(f"--{flag}", help="local save_pretrained() directory")
    p.add_argument("--device", default=None, help="auto | cpu | cuda[:N]")
    p.add_argument("--beams", type=int, default=4, help="beam width for every model (the defaults use 4)")
    p.add_argument("--batch", type=int, default=8, help="images per captioning batch")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per measurement (median)")
    args = p.parse_args(argv)
    runtime = pick_runtime(args.device)

    def marian_pair(path: Path) -> Path:
        make_tiny_marian_dir(path / "opus-mt-zh-en", "zh", "en")
        make_tiny_marian_dir(path / "opus-mt-en-zh", "en", "zh", seed=1)
        return path

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-caption-") as tmp:
        tmp = Path(tmp)
        for name, env, build, bench in (
                ("vit-gpt2", "CLIP_WB_VITGPT2_DIR", make_tiny_vit_gpt2_dir, bench_captioner),
                ("blip", "CLIP_WB_BLIP_DIR", make_tiny_blip_dir, bench_captioner),
                ("nllb", "CLIP_WB_NLLB_DIR", make_tiny_nllb_dir, bench_translator),
                ("marian", "CLIP_WB_MARIAN_DIR", marian_pair, bench_translator)):
            path, weights = _source(getattr(args, name.replace("-", "_")), env, build, tmp, name)
            start = time.perf_counter()
            rows += bench(name, path, weights, runtime, args)
            print(f"{name} ({weights}): {time.perf_counter() - start:.0f} s", file=sys.stderr)
    print(f"Device: {runtime.describe()}; beams {args.beams}; median of {args.repeats} runs.\n")
    print(_table(rows))
    if any(r[1] == "tiny" for r in rows):
        print("\nRows marked tiny ran on tiny random models (a few hundred thousand parameters): they time "
              "the loading, preprocessing, generate() and caching plumbing, NOT the real models' latency.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
