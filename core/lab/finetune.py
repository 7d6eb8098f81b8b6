"""Fine-tune a pretrained CLIP (OpenAI `clip`, Hugging Face CLIP-style, or the mini model) on
image-caption pairs, with Recall@K on a held-out split before and after.

    python -m core.train --init ViT-B/32 --data flickr8k:/data/flickr8k --epochs 3 --out runs/ft
    python -m core.train --init ViT-B/32 --data csv:my_pairs.csv --mode adapter --epochs 10 --out runs/ft
    python -m core.train --init runs/shapes/best.pt --data shapes --epochs 2 --out runs/ft-mini

Two modes:
    full     every weight trains, with a small learning rate (1e-5 by default: a pretrained CLIP
             forgets quickly at the 1e-3 of training from scratch), warmup + cosine decay.
    adapter  the towers stay frozen; a residual linear adapter per tower, f' = f + W f (W starts
             at zero, so epoch 0 is the pretrained model), learns at a larger rate. It is the light
             "CLIP-Adapter" head of the course material, kept linear so that it folds into each
             tower's final projection when saved: the result is an ordinary checkpoint that every
             loader (and the app) reads, with no extra code at inference.

The loss is the symmetric InfoNCE of core/lab/train.py at the model's own temperature; on Shapes
every image that fits a caption counts as its positive (and `--hard-negatives` adds a caption
with the shape swapped). The split is the data's own (Flickr8k) or a fixed 6:1:1 by image.

The run folder holds: finetune_config.json, log.json (one row per epoch), report.json and
report.md (Recall@K before/after on the test split), recall.png and curves.png, and the model:
`finetuned.pt` (OpenAI CLIP state dict, or a mini-CLIP checkpoint) or `finetuned/` (Hugging
Face save_pretrained). Load it with `load_encoder(path)` or `python demo.py --model PATH`.

Numbers from the tiny random models of the tests mean nothing; real numbers need real weights.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from PIL import Image

from ..models import load_encoder
from ..models.base import Encoder
from ..settings import pick_runtime
from .pairs import PairSet, evaluate_pairs, load_pairsets
from .objective import contrastive_loss, schedule

__all__ = ["FinetuneConfig", "finetune", "recall_table", "REAL_WEIGHTS_NOTE"]

REAL_WEIGHTS_NOTE = ("Numbers from a random or tiny model (as in the tests) mean nothing: real numbers need real "
                     "weights (a pretrained checkpoint) and a real data set.")


@dataclass
class FinetuneConfig:
    init: str = "ViT-B/32"           # model name, checkpoint file or save_pretrained folder to start from
    data: str = "shapes"             # "shapes", "flickr8k:DIR" or "csv:FILE" (path,caption rows)
    epochs: int = 2
    batch_size: int = 32             # contrastive batches: larger gives more negatives per step
    mode: str = "full"               # "full" (every weight, small lr) or "adapter" (frozen towers + linear adapters)
    lr: float = 1e-5                 # peak lr in full mode (pretrained CLIPs forget fast at larger rates)
    adapter_lr: float = 1e-3         # peak lr of the adapters in adapter mode
    weight_decay: float = 0.1
    warmup: float = 0.1              # fraction of the steps spent warming up linearly
    hard_negatives: bool = False     # Shapes: add a caption with the shape swapped as an extra negative
    out: str = "runs/finetune"       # run folder
    seed: int = 0
    device: str = "auto"             # "auto" | "cpu" | "cuda" | "cuda:N"; training is float32 everywhere
    offline: bool = False            # never download the --init model
    shapes_train: int = 1000         # Shapes split sizes (ignored for other data)
    shapes_val: int = 200
    shapes_test: int = 300
    plots: bool = True


# ---------------------------------------------------------------- adapters

class _Adapted(Encoder):
    """An encoder whose features pass through residual linear adapters: f + W f per tower."""

    def __init__(self, base: Encoder, image: torch.nn.Linear | None, text: torch.nn.Linear | None):
        self.base, self.image_adapter, self.text_adapter = base, image, text
        self.model_id, self.dim, self.runtime = base.model_id, base.dim, base.runtime
        self.logit_scale, self.batch_size = base.logit_scale, base.batch_size

    def preprocess(self, image):
        return self.base.preprocess(image)

    def _image_features(self, pixels):
        f = self.base._image_features(pixels).float()
        return f if self.image_adapter is None else f + self.image_adapter(f)

    def _text_features(self, texts):
        f = self.base._text_features(texts).float()
        return f if self.text_adapter is None else f + self.text_adapter(f)


def _projections(encoder: Encoder) -> tuple[Callable[[torch.Tensor], None], Callable[[torch.Tensor], None]]:
    """(fold_image, fold_text): each folds (I + W) into its tower's last linear map, in place.
    A ValueError names the model when its towers end in no linear map we know."""
    model = encoder.model

    def linear(layer):        # nn.Linear: y = x A^T (+ b)  ->  A' = (I + W) A, b' = (I + W) b
        def fold(w):
            m = torch.eye(w.shape[0]) + w
            layer.weight.data = m.to(layer.weight) @ layer.weight.data
            if layer.bias is not None:
                layer.bias.data = m.to(layer.bias) @ layer.bias.data
        return fold

    def matrix(param):        # clip: y = x P  ->  P' = P (I + W)^T
        def fold(w):
            param.data = param.data @ (torch.eye(w.shape[0]) + w).T.to(param)
        return fold
    if hasattr(model, "text_projection") and isinstance(model.text_projection, torch.nn.Parameter):   # OpenAI clip
        proj = getattr(model.visual, "proj", None)
        image = matrix(proj) if proj is not None else linear(model.visual.attnpool.c_proj)
        return image, matrix(model.text_projection)
    for image_name, text_name in (("visual_projection", "text_projection"), ("image_proj", "text_proj")):
        if isinstance(getattr(model, image_name, None), torch.nn.Linear):      # Hugging Face CLIP / mini-CLIP
            return linear(getattr(model, image_name)), linear(getattr(model, text_name))
    raise ValueError(f"--mode adapter needs towers that end in a linear projection; {encoder.model_id} "
                     "has none we know. Use --mode full.")


# ---------------------------------------------------------------- data

def _to_pil(images: torch.Tensor) -> list[Image.Image]:
    return [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in images]


def _batches(train: PairSet, cfg: FinetuneConfig, epoch: int):
    """(indices, PIL images, texts, caption codes) per batch; the order depends only on (seed, epoch).
    A set smaller than one batch is one batch."""
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    rng = random.Random(f"{cfg.seed}-{epoch}")
    order = torch.randperm(len(train), generator=gen)
    size = min(cfg.batch_size, len(train))
    for start in range(0, len(order) - size + 1, size):      # the ragged last batch is dropped
        idx = order[start:start + size]
        per_image = [train.sample_caption(int(i), rng) for i in idx]
        kinds = len(per_image[0]) if cfg.hard_negatives else 1
        texts, codes = zip(*[pairs[k] for k in range(kinds) for pairs in per_image])
        yield idx, _to_pil(train.images[idx]), list(texts), torch.tensor(codes)


def _input_size(encoder: Encoder) -> int:
    """The side of the image the model reads (images are kept in memory at that size)."""
    return int(encoder.preprocess(Image.new("RGB", (8, 8))).shape[-1])


# ---------------------------------------------------------------- training

def _trainable(encoder: Encoder, cfg: FinetuneConfig) -> tuple[Encoder, list[torch.nn.Parameter], float]:
    """(encoder to train, its trainable parameters, peak lr) for cfg.mode."""
    if cfg.mode == "full":
        params = [p for n, p in encoder.model.named_parameters() if "logit_scale" not in n]
        for p in params:
            p.requires_grad_(True)
        return encoder, params, cfg.lr
    if cfg.mode != "adapter":
        raise ValueError(f"Unknown --mode {cfg.mode!r}; expected 'full' or 'adapter'")
    _projections(encoder)   # fails early for a model whose adapter could not be folded
    encoder.model.requires_grad_(False)
    image, text = (torch.nn.Linear(encoder.dim, encoder.dim, bias=False) for _ in range(2))
    for layer in (image, text):
        torch.nn.init.zeros_(layer.weight)      # starts as the pretrained model exactly
        layer.to(encoder.runtime.device)
    return _Adapted(encoder, image, text), [image.weight, text.weight], cfg.adapter_lr


def _step_loss(enc: Encoder, pils, texts, positives: torch.Tensor, adapter: bool) -> torch.Tensor:
    pixels = torch.stack([enc.preprocess(p) for p in pils]).to(enc.runtime.device)
    with torch.set_grad_enabled(not adapter):   # adapter mode: the frozen towers need no graph
        img = enc.base._image_features(pixels) if adapter else enc._image_features(pixels)
        txt = enc.base._text_features(texts) if adapter else enc._text_features(texts)
    if adapter:
        img = img.float() + enc.image_adapter(img.float())
        txt = txt.float() + enc.text_adapter(txt.float())
    logits = min(enc.logit_scale, 100.0) * F.normalize(img.float(), dim=-1) @ F.normalize(txt.float(), dim=-1).T
    return contrastive_loss(logits, positives.to(logits.device))


def _epoch(enc: Encoder, train: PairSet, cfg: FinetuneConfig, epoch: int, opt, sched) -> float:
    adapter = isinstance(enc, _Adapted)
    model = enc.base.model if adapter else enc.model
    model.train(not adapter)
    losses = []
    for idx, pils, texts, codes in _batches(train, cfg, epoch):
        loss = _step_loss(enc, pils, texts, train.positives(idx, codes), adapter)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return sum(losses) / max(1, len(losses))


def _save_model(encoder: Encoder, out: Path, cfg: FinetuneConfig) -> Path:
    """The fine-tuned weights in the format their loader reads (see the module docstring)."""
    model = encoder.model
    if hasattr(encoder, "processor"):                                    # Hugging Face
        target = out / "finetuned"
        model.save_pretrained(target)
        encoder.processor.save_pretrained(target)
        return target
    if hasattr(encoder, "tokenizer"):                                    # mini-CLIP
        from ..models.mini import save_checkpoint
        return save_checkpoint(out / "finetuned.pt", model, encoder.tokenizer, f"finetune-{out.name}",
                               {"data": cfg.data, "init": cfg.init, "epochs_trained": cfg.epochs})
    target = out / "finetuned.pt"                                        # OpenAI clip: a plain state dict
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, target)
    return target


def finetune(cfg: FinetuneConfig, progress: Callable[[dict], None] | None = None) -> dict:
    """Fine-tune cfg.init on cfg.data; returns the report (also written to cfg.out/report.json).
    progress(log_row) is called after each epoch. Raises ValueError (DatasetError) on bad input,
    ModelUnavailableError / UnknownModelError when the model cannot be loaded."""
    base = pick_runtime(cfg.device, "torch")
    runtime = replace(base, dtype=torch.float32)    # fp32 weights while training, on CUDA too
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "finetune_config.json").write_text(json.dumps(asdict(cfg), indent=1), encoding="utf-8")
    encoder = load_encoder(cfg.init, runtime, offline=cfg.offline)
    data = load_pairsets(cfg.data, _input_size(encoder), cfg.seed, (cfg.shapes_train, cfg.shapes_val, cfg.shapes_test))
    before = evaluate_pairs(encoder, data["test"])
    enc, params, lr = _trainable(encoder, cfg)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * max(1, len(data["train"]) // min(cfg.batch_size, len(data["train"])))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: schedule(s, steps, cfg.warmup))
    log = []
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        loss = _epoch(enc, data["train"], cfg, epoch, opt, sched)
        val = evaluate_pairs(enc, data["val"])
        log.append({"epoch": epoch + 1, "train_loss": round(loss, 5), "seconds": round(time.perf_counter() - t0, 1),
                    **{f"val_{k}": round(v, 3) for k, v in val.items()}})
        (out / "log.json").write_text(json.dumps(log, indent=1), encoding="utf-8")
        if progress is not None:
            progress(log[-1])
    if isinstance(enc, _Adapted):
        fold_image, fold_text = _projections(encoder)
        fold_image(enc.image_adapter.weight.detach().cpu())
        fold_text(enc.text_adapter.weight.detach().cpu())
    after = evaluate_pairs(encoder, data["test"])
    report = {"init": cfg.init, "model_id": encoder.model_id, "data": cfg.data, "mode": cfg.mode,
              "epochs": cfg.epochs, "sizes": {s: len(d) for s, d in data.items()},
              "checkpoint": str(_save_model(encoder, out, cfg)), "before": before, "after": after,
              "log": log, "note": REAL_WEIGHTS_NOTE}
    _write_report(out, report, cfg.plots)
    return report


# ---------------------------------------------------------------- report

def recall_keys(metrics: dict) -> list[str]:
    """The Recall@K entries of an evaluate_pairs dict, in its order."""
    return [k for k in metrics if "_R@" in k]


def recall_table(report: dict) -> str:
    """Markdown: one row per Recall@K, before -> after (percent on the held-out test split)."""
    rows = ["| metric | before | after | change |", "| --- | ---: | ---: | ---: |"]
    for k in [*recall_keys(report["before"]), "mean_recall"]:
        b, a = report["before"][k], report["after"][k]
        rows.append(f"| {k} | {b:.1f} | {a:.1f} | {a - b:+.1f} |")
    return "\n".join(rows)


def _write_report(out: Path, report: dict, plots: bool) -> None:
    (out / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
    sizes = ", ".join(f"{s} {n}" for s, n in report["sizes"].items())
    md = [f"# Fine-tuning {report['init']} on {report['data']} ({report['mode']}, {report['epochs']} epochs)", "",
          f"Images: {sizes}. Recall@K in percent on the held-out test split.", "", recall_table(report), "",
          f"Model: `{report['checkpoint']}`", "", f"> {report['note']}", ""]
    if plots:
        from .plots import plot_finetune
        md += [f"![{p.stem}]({p.name})" for p in plot_finetune(report, out)]
    (out / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")
