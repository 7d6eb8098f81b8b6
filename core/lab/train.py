"""Train the mini-CLIP (core/mini.py) from scratch on Shapes or Flickr8k.

    python -m core.train --data shapes --text-encoder transformer --epochs 8 --out runs/shapes
    python -m core.train --data flickr8k:/data/flickr8k --epochs 20 --augment --out runs/f8k
    python -m core.train --resume runs/shapes/last.pt --epochs 12      # continue to 12 epochs
    python -m core.train plot runs/shapes                  # redraw the PNGs (core/plots.py)
    python -m core.train export runs/shapes/best.pt assets/mini/mini_clip_shapes.pt --bits 4
    python -m core.train evaluate assets/mini/mini_clip_shapes.pt --json metrics.json
    python -m core.train --init ViT-B/32 --data csv:pairs.csv --epochs 3 --out runs/ft   # fine-tune (core/lab/finetune.py)

Loss: symmetric InfoNCE. On Shapes a caption such as "a red circle" fits every red circle
in the batch, so all matching images count as positives (targets spread evenly over them);
on Flickr8k a caption matches its own image only, which is plain CLIP InfoNCE.
Optimiser: AdamW, linear warmup then cosine decay, per step; mixed precision only on CUDA.

A run folder holds: config.json, log.csv + log.json (one row per epoch: train loss, lr,
temperature, validation Recall@K, zero-shot top-1 on Shapes), last.pt (resumable, with
optimiser state), best.pt (best validation mean recall), test_metrics.json (best.pt on
the held-out test split), and the plots written at the end of training.
The command (`python -m core.train`, its flags made from TrainConfig) is cli/train.py.
"""
from __future__ import annotations

import csv
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..models.mini import (MiniCLIP, MiniConfig, MiniEncoder, Tokenizer, load_checkpoint, normalize_pixels,
                   save_checkpoint)
from .objective import contrastive_loss, schedule as _schedule
from .pairs import PairSet, evaluate_pairs, load_pairsets
from ..messages import Msg
from ..settings import Runtime, pick_runtime

__all__ = ["TrainConfig", "PairSet", "train", "load_pairsets", "evaluate_pairs", "contrastive_loss"]

_NO_DECAY = ("bias", "bn", "norm", "downsample.1", "logit_scale", "position", "token")  # params AdamW must not shrink


@dataclass
class TrainConfig:
    data: str = "shapes"              # "shapes", "flickr8k:DIR" or "csv:FILE" (path,caption rows)
    text_encoder: str = "transformer"  # "transformer" or "lstm"
    epochs: int = 10
    batch_size: int = 64              # 64 beat 128 (and lr 2e-3) on Shapes at equal compute: more steps
    lr: float = 1e-3                  # peak learning rate after warmup
    weight_decay: float = 0.05
    warmup: float = 0.05              # fraction of all steps spent warming up linearly
    image_size: int = 64              # training resolution (Shapes are rendered at this size)
    augment: bool = False             # random shifts + brightness/contrast jitter (never flips: captions say left/right)
    out: str = "runs/mini"            # run folder
    seed: int = 0
    device: str = "auto"              # "auto" | "cpu" | "cuda" | "cuda:N"
    shapes_train: int = 5000          # Shapes split sizes
    shapes_val: int = 500
    shapes_test: int = 1000
    resnet_weights: str = ""          # optional local torchvision ResNet18 state dict (e.g. ImageNet)
    name: str = ""                    # model name inside the checkpoint (default: the run folder's name)
    plots: bool = True                # write the PNGs at the end
    hard_negatives: bool = True       # Shapes: add a caption with the shape swapped as an extra negative per image


# ---------------------------------------------------------------- data

def _training_encoder(model: MiniCLIP, tokenizer: Tokenizer, runtime: Runtime) -> MiniEncoder:
    """The model being trained behind the Encoder interface, kept in float32 (it is still training)."""
    return MiniEncoder(model, tokenizer, "training", Runtime(runtime.device, torch.float32))


# ---------------------------------------------------------------- training

def _optimizer(model: MiniCLIP, cfg: TrainConfig) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or any(k in name for k in _NO_DECAY) else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)


def _augment(pixels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """uint8 [B, 3, S, S] -> uint8: shift by up to S/16 pixels and jitter brightness/contrast by 10%."""
    b, _, s, _ = pixels.shape
    pad = max(1, s // 16)
    padded = F.pad(pixels.float(), (pad,) * 4, mode="replicate")
    dx, dy = torch.randint(0, 2 * pad + 1, (2, b), generator=gen).tolist()
    out = torch.stack([padded[i, :, y:y + s, x:x + s] for i, (x, y) in enumerate(zip(dx, dy))])
    gain = 1 + (torch.rand(b, 1, 1, 1, generator=gen) - 0.5) * 0.2
    bias = (torch.rand(b, 1, 1, 1, generator=gen) - 0.5) * 0.2 * 255
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    return ((out - mean) * gain + mean + bias).clamp(0, 255).to(torch.uint8)


def _batches(train: PairSet, cfg: TrainConfig, epoch: int):
    """Yield (pixels uint8 [B,3,S,S], captions, caption codes [B,A]) for one epoch; the order,
    captions and augmentation depend only on (seed, epoch), so a resumed run repeats them."""
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    rng = random.Random(f"{cfg.seed}-{epoch}")
    order = torch.randperm(len(train), generator=gen)
    for start in range(0, len(order) - cfg.batch_size + 1, cfg.batch_size):  # drop the ragged last batch
        idx = order[start:start + cfg.batch_size]
        pixels = train.images[idx]
        if cfg.augment:
            pixels = _augment(pixels, gen)
        per_image = [train.sample_caption(int(i), rng) for i in idx]
        # captions first (column j belongs to image j), then the hard negatives, if any
        kinds = len(per_image[0]) if cfg.hard_negatives else 1
        texts, codes = zip(*[pairs[k] for k in range(kinds) for pairs in per_image])
        yield idx, pixels, list(texts), torch.tensor(codes)


def _train_epoch(model, tokenizer, train: PairSet, cfg, epoch, opt, sched, scaler, runtime: Runtime, progress,
                 on_step: Callable[[int, float], None] | None = None) -> float:
    model.train()
    steps = len(train) // cfg.batch_size
    losses = []
    bar = tqdm(_batches(train, cfg, epoch), total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}",
               disable=not progress, leave=False)
    for idx, pixels, texts, codes in bar:
        pixels = normalize_pixels(pixels.to(runtime.device, non_blocking=True), model.config)
        tokens = tokenizer.encode(texts, model.config.context_length).to(runtime.device)
        positives = train.positives(idx, codes).to(runtime.device)
        with torch.autocast(device_type=runtime.device.type, dtype=torch.float16, enabled=runtime.is_cuda):
            loss = contrastive_loss(model(pixels, tokens), positives)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if on_step is not None:
            on_step(epoch * steps + len(losses), losses[-1])
    return sum(losses) / max(1, len(losses))


def _write_log(run: Path, log: list[dict]) -> None:
    (run / "log.json").write_text(json.dumps(log, indent=1), encoding="utf-8")
    keys = list(dict.fromkeys(k for row in log for k in row))
    with open(run / "log.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, keys)
        writer.writeheader()
        writer.writerows(log)


def _setup(cfg: TrainConfig, data: dict[str, PairSet], resume: str | None):
    """-> (model, tokenizer) fresh or from the checkpoint being resumed"""
    if resume:
        model, tokenizer, _ = load_checkpoint(Path(resume))
        return model, tokenizer
    tokenizer = Tokenizer.build(data["train"].vocab_texts(), min_count=data["train"].min_count)
    model = MiniCLIP(MiniConfig(image_size=cfg.image_size, text_encoder=cfg.text_encoder, vocab_size=len(tokenizer)))
    if cfg.resnet_weights:
        model.load_resnet_weights(Path(cfg.resnet_weights))
    return model, tokenizer


def _resumed(cfg: TrainConfig, resume: str | None) -> tuple[TrainConfig, dict | None]:
    """The checkpoint to resume from and the run's own settings, which win over cfg except
    for how long to train, where, and whether to plot."""
    if not resume:
        return cfg, None
    ckpt = torch.load(resume, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "optimizer" not in ckpt:
        raise ValueError(Msg("{resume} 中没有优化器状态；请从该次训练的 last.pt 继续，而不是 best.pt 或导出的模型",
                             "{resume} holds no optimiser state; resume from the run's last.pt, not best.pt or an export",
                             resume=resume))
    saved = {k: v for k, v in ckpt["train_config"].items() if k not in ("epochs", "device", "plots")}
    return TrainConfig(**{**asdict(cfg), **saved}), ckpt


def _save_epoch(run: Path, model, tokenizer, cfg: TrainConfig, state: dict, metrics: dict, best: bool) -> None:
    """log.csv/json, last.pt with everything --resume needs, and best.pt when the epoch is the best."""
    _write_log(run, state["log"])
    name = cfg.name or run.name
    meta = {"data": cfg.data, "epochs_trained": state["epoch"], "seed": cfg.seed, "val": metrics}
    save_checkpoint(run / "last.pt", model, tokenizer, name, meta, extra={"train_config": asdict(cfg), **state})
    if best:
        save_checkpoint(run / "best.pt", model, tokenizer, name, meta)


def train(cfg: TrainConfig, resume: str | None = None, progress: bool = True,
          on_epoch: Callable[[dict], None] | None = None,
          on_step: Callable[[int, float], None] | None = None) -> Path:
    """Run (or continue) training; returns the run folder. Raises ValueError on bad input.
    on_epoch(log_row) is called after each epoch's checkpoint is saved (a UI's progress hook);
    an exception it raises stops training there, and --resume continues from that epoch.
    on_step(global step, loss) is called after each optimiser step (live plots); an exception
    it raises stops training at once (the last finished epoch's checkpoints stay)."""
    cfg, ckpt = _resumed(cfg, resume)
    runtime = pick_runtime(cfg.device)
    torch.manual_seed(cfg.seed)
    run = Path(cfg.out)
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(asdict(cfg), indent=1), encoding="utf-8")
    data = load_pairsets(cfg.data, cfg.image_size, cfg.seed, (cfg.shapes_train, cfg.shapes_val, cfg.shapes_test))
    if len(data["train"]) < cfg.batch_size:
        raise ValueError(Msg("--batch-size {batch} 超过了训练图片数 {images}；请调小",
                             "--batch-size {batch} exceeds the {images} training images; lower it",
                             batch=cfg.batch_size, images=len(data["train"])))
    model, tokenizer = _setup(cfg, data, resume)
    model.to(runtime.device)  # trained in float32; autocast picks fp16 per op on CUDA
    opt = _optimizer(model, cfg)
    total = cfg.epochs * (len(data["train"]) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, total, cfg.warmup))
    scaler = torch.amp.GradScaler(enabled=runtime.is_cuda)
    log, start = [], 0
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        log, start = list(ckpt["log"]), int(ckpt["epoch"])
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        loss = _train_epoch(model, tokenizer, data["train"], cfg, epoch, opt, sched, scaler, runtime, progress, on_step)
        metrics = evaluate_pairs(_training_encoder(model, tokenizer, runtime), data["val"])
        row = {"epoch": epoch + 1, "train_loss": round(loss, 5), "lr": opt.param_groups[0]["lr"],
               "temperature": round(1 / model.logit_scale.exp().item(), 5),
               "seconds": round(time.perf_counter() - t0, 1), **{f"val_{k}": round(v, 3) for k, v in metrics.items()}}
        best = all(row["val_mean_recall"] > r["val_mean_recall"] for r in log)
        log.append(row)
        _save_epoch(run, model, tokenizer, cfg, {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                                                  "epoch": epoch + 1, "log": log}, metrics, best)
        if on_epoch is not None:
            on_epoch(row)
    _finish(run, data, runtime, cfg.plots)
    return run


def _finish(run: Path, data: dict[str, PairSet], runtime: Runtime, plots: bool) -> None:
    """Test metrics of best.pt, and the plots."""
    model, tokenizer, _ = load_checkpoint(run / "best.pt")
    test = evaluate_pairs(_training_encoder(model, tokenizer, runtime), data["test"])
    (run / "test_metrics.json").write_text(json.dumps(test, indent=1), encoding="utf-8")
    if plots:
        from .plots import plot_run
        plot_run(run, model, tokenizer, data["val"], runtime)
