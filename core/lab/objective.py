"""The training objective shared by training from scratch (train.py) and fine-tuning (finetune.py):
symmetric InfoNCE with several positives, and the learning-rate schedule."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["contrastive_loss", "schedule"]


def contrastive_loss(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with (possibly several) positives and extra negative texts.
    logits [B_img, B_txt]; positives bool [B_img, B_txt], every image with at least one
    positive text. Texts that fit no image in the batch (hard negatives) only compete."""
    pos = positives.float()
    i2t = F.cross_entropy(logits.float(), pos / pos.sum(dim=1, keepdim=True))
    fits = pos.sum(dim=0) > 0
    t2i = F.cross_entropy(logits.float().T[fits], pos.T[fits] / pos.T[fits].sum(dim=1, keepdim=True))
    return (i2t + t2i) / 2


def schedule(step: int, total: int, warmup: float) -> float:
    """Learning-rate multiplier: linear warmup, then cosine decay to zero."""
    warm = max(1, int(total * warmup))
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
