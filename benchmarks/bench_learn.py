"""Does "Watch a CLIP learn" learn with its defaults? The Learn tab's live training (core/lab/live.py
LiveConfig) against the defaults it had before (48 px, lr 1e-3, 3 epochs x 2048 Shapes images), on
the same machine in one run: held-out metrics after every epoch and the seconds it took.

    python benchmarks/bench_learn.py            # both configurations, one after the other
    python benchmarks/bench_learn.py --only new --seed 1

Chance on the validation split: shape top-1 1/6 = 16.7 %, colour top-1 1/8 = 12.5 %, mean recall
(R@1/5/10 both ways over 200 images) about 2.7 %.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.lab.live import LiveConfig  # noqa: E402
from core.lab.train import train  # noqa: E402

CONFIGS = {"old": LiveConfig(epochs=3, shapes_train=2048, image_size=48, lr=1e-3), "new": LiveConfig()}
SHOWN = ("val_mean_recall", "val_en_colour_top1", "val_en_shape_top1", "val_en_t2i_R@1")
CHANCE_RECALL = 2.7


def run(name: str, config: LiveConfig, seed: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        cfg = replace(config.train_config(Path(out) / name), seed=seed, device="cpu")
        start, last = time.perf_counter(), {}

        def show(row: dict) -> None:
            last.update(row)
            cells = "  ".join(f"{k.removeprefix('val_')} {row[k]:5.1f}" for k in SHOWN)
            print(f"{name:4} epoch {row['epoch']}  {time.perf_counter() - start:6.1f} s  loss {row['train_loss']:.3f}  "
                  f"{cells}", flush=True)
        train(cfg, progress=False, on_epoch=show)
    print(f"{name:4} done in {time.perf_counter() - start:.1f} s: mean recall {last['val_mean_recall']:.1f} % = "
          f"{last['val_mean_recall'] / CHANCE_RECALL:.1f}x chance", flush=True)
    return last["val_mean_recall"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=sorted(CONFIGS))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    results = {n: run(n, c, args.seed) for n, c in CONFIGS.items() if args.only in (None, n)}
    if len(results) == 2:
        print(f"final mean recall, new / old: {results['new'] / results['old']:.1f}x")


if __name__ == "__main__":
    main()
