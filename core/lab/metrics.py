"""Evaluation metrics on embeddings and logits: retrieval Recall@K and mAP@K, top-k accuracy.

All results are percentages (0..100) as plain Python floats.

Ranks and ties. Every metric here ranks the correct item by counting competitors:
with `ties="optimistic"` (the default) the rank is the number of items scoring
*strictly higher* than the correct one, so an item tied with the correct one does
not push it down; with `ties="pessimistic"` every competitor scoring *at least as
high* counts. A hit at k means rank < k. This is deterministic (no dependence on
sort order), and with real float features the two agree except for exact ties,
which in practice come from duplicate images (both copies legitimately match, so
optimistic is the fair default) or from a collapsed encoder that maps everything to
one vector (pessimistic then reports 0 instead of a misleading 100 — use it as a
sanity check when training).

mAP@K ranks several relevant items at once (an image's 5 captions): with "optimistic" ties the
relevant items of a group of equal scores come before the group's other items, with "pessimistic"
after them; the order among relevant items themselves never changes a score.
"""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["retrieval_recall", "retrieval_map", "topk_accuracy", "per_class_accuracy"]

# Similarity rows are computed in chunks of at most this many scores (64 MiB of float32)
# so 25k captions x 5k images never materialise the full 125M-entry matrix at once.
_CHUNK_SCORES = 1 << 24
_TIES = ("optimistic", "pessimistic")


def _chunk_rows(other: int) -> int:
    return max(1, _CHUNK_SCORES // max(1, other))


def _beats(scores: torch.Tensor, target: torch.Tensor, ties: str) -> torch.Tensor:
    """Which competitors outrank the target. scores [B, N], target [B] -> bool [B, N]."""
    if ties not in _TIES:
        raise ValueError(f"ties must be one of {_TIES}, got {ties!r}")
    return scores > target[:, None] if ties == "optimistic" else scores >= target[:, None]


def _check_features(image_feats: torch.Tensor, text_feats: torch.Tensor, t2i: torch.Tensor) -> None:
    if image_feats.ndim != 2 or text_feats.ndim != 2 or image_feats.shape[1] != text_feats.shape[1]:
        raise ValueError(f"expected image_feats [Ni, D] and text_feats [Nt, D] with the same D, "
                         f"got {tuple(image_feats.shape)} and {tuple(text_feats.shape)}")
    if t2i.numel() != text_feats.shape[0]:
        raise ValueError(f"text_to_image has {t2i.numel()} entries but there are {text_feats.shape[0]} texts; "
                         "give one image index per text")
    if t2i.numel() and (int(t2i.min()) < 0 or int(t2i.max()) >= image_feats.shape[0]):
        raise ValueError(f"text_to_image indices must lie in [0, {image_feats.shape[0]}), "
                         f"got range [{int(t2i.min())}, {int(t2i.max())}]")


def _t2i_ranks(image_feats, text_feats, t2i, ties) -> torch.Tensor:
    """Rank of each text's own image among all images. -> long [Nt]"""
    ranks = []
    step = _chunk_rows(image_feats.shape[0])
    for start in range(0, text_feats.shape[0], step):
        scores = text_feats[start:start + step] @ image_feats.T  # [B, Ni]
        gt = t2i[start:start + step]
        pos = scores[torch.arange(scores.shape[0], device=scores.device), gt]
        beats = _beats(scores, pos, ties)
        if ties == "pessimistic":
            beats[torch.arange(scores.shape[0], device=scores.device), gt] = False  # not a competitor of itself
        ranks.append(beats.sum(dim=1))
    return torch.cat(ranks) if ranks else torch.empty(0, dtype=torch.long)


def _i2t_ranks(image_feats, text_feats, t2i, ties) -> torch.Tensor:
    """Rank of each image's best-scoring own caption among the other images' captions.
    Images without any caption are left out. -> long [Ni_with_captions]"""
    ranks = []
    step = _chunk_rows(text_feats.shape[0])
    for start in range(0, image_feats.shape[0], step):
        scores = image_feats[start:start + step] @ text_feats.T  # [B, Nt]
        rows = torch.arange(start, start + scores.shape[0], device=scores.device)
        own = t2i[None, :] == rows[:, None]  # [B, Nt] captions of each image
        has_caption = own.any(dim=1)
        best = scores.masked_fill(~own, float("-inf")).max(dim=1).values
        # the image's other captions never count against it: any one of them is a hit
        beats = _beats(scores, best, ties) & ~own
        ranks.append(beats.sum(dim=1)[has_caption])
    return torch.cat(ranks) if ranks else torch.empty(0, dtype=torch.long)


def _recall_at(ranks: torch.Tensor, k: int) -> float:
    if ranks.numel() == 0:
        return float("nan")
    return 100.0 * float((ranks < k).double().mean())


def retrieval_recall(image_feats: torch.Tensor, text_feats: torch.Tensor, text_to_image: Sequence[int],
                     ks: Sequence[int] = (1, 5, 10), ties: str = "optimistic") -> dict[str, float]:
    """Recall@K in both directions, the COCO / Flickr30k protocol.

    image_feats [Ni, D] and text_feats [Nt, D] are L2-normalised (cosine = dot product);
    text_to_image [Nt] gives each caption's image index (several captions per image allowed).
    Text->image: a caption hits at k when its image is among the top k images.
    Image->text: an image hits at k when ANY of its captions is among the top k texts;
    images with no caption are left out of the image->text average.
    k larger than the candidate count simply counts every query as a hit.
    Returns {"t2i_R@1": .., "t2i_R@5": .., ..., "i2t_R@1": .., ..., "mean_recall": ..} in percent;
    mean_recall is the mean of all 2*len(ks) recalls (the usual "RSUM / 6" for ks=(1,5,10)).
    """
    t2i = torch.as_tensor(list(text_to_image), dtype=torch.long, device=image_feats.device)
    image_feats, text_feats = image_feats.float(), text_feats.to(image_feats.device).float()
    _check_features(image_feats, text_feats, t2i)
    t2i_ranks = _t2i_ranks(image_feats, text_feats, t2i, ties)
    i2t_ranks = _i2t_ranks(image_feats, text_feats, t2i, ties)
    out = {f"t2i_R@{k}": _recall_at(t2i_ranks, k) for k in ks}
    out.update({f"i2t_R@{k}": _recall_at(i2t_ranks, k) for k in ks})
    out["mean_recall"] = sum(out.values()) / len(out) if out else float("nan")
    return out


def _average_precision(scores: torch.Tensor, relevant: torch.Tensor, ks: Sequence[int], ties: str) -> torch.Tensor:
    """AP@K of each query row with at least one relevant item. scores [B, N], relevant bool [B, N]
    -> float64 [B', len(ks)] (B' = rows with a relevant item), in 0..1.

    The i-th relevant item (best first, i = 1..R) sits at 0-based position p_i = (i - 1) + the number of
    other items that outrank it (_beats); it adds precision i / (p_i + 1) when p_i < K."""
    counts = relevant.sum(dim=1)
    keep = counts > 0
    scores, relevant, counts = scores[keep], relevant[keep], counts[keep]
    if scores.shape[0] == 0:
        return torch.empty(0, len(ks), dtype=torch.float64, device=scores.device)
    most = int(counts.max())
    own = scores.masked_fill(~relevant, float("-inf")).topk(most, dim=1).values          # [B, R] best first
    others = scores.masked_fill(relevant, float("-inf")).sort(dim=1).values            # [B, N] ascending
    at_or_below = torch.searchsorted(others, own.contiguous(), right=ties == "optimistic")
    beaten_by = scores.shape[1] - at_or_below                                           # others above (or tied)
    i = torch.arange(1, most + 1, device=scores.device)
    valid = i[None, :] <= counts[:, None]
    position = (i - 1)[None, :] + beaten_by
    precision = i[None, :].double() / (position + 1).double()
    out = [(precision * (valid & (position < k))).sum(dim=1) / counts.clamp(max=k).double() for k in ks]
    return torch.stack(out, dim=1)


def _map_rows(queries: torch.Tensor, candidates: torch.Tensor, relevant_of, ks, ties) -> torch.Tensor:
    """AP@K of every query against every candidate, in chunks. relevant_of(start, stop) -> bool [B, N]."""
    rows = []
    step = _chunk_rows(candidates.shape[0])
    for start in range(0, queries.shape[0], step):
        scores = queries[start:start + step] @ candidates.T
        rows.append(_average_precision(scores, relevant_of(start, start + scores.shape[0]), ks, ties))
    return torch.cat(rows) if rows else torch.empty(0, len(ks), dtype=torch.float64)


def retrieval_map(image_feats: torch.Tensor, text_feats: torch.Tensor, text_to_image: Sequence[int],
                  ks: Sequence[int] = (5, 10), ties: str = "optimistic") -> dict[str, float]:
    """mAP@K in both directions, in percent: the mean over queries of average precision at K, every
    relevant item counted.

    For one query with R >= 1 relevant items and its ranked candidates at positions 1..N:

        AP@K = (1 / min(K, R)) * sum_{i=1..min(K, N)} P@i * rel_i

    where rel_i = 1 when the candidate at position i is relevant (else 0) and P@i = (relevant items
    among the first i) / i. The denominator is min(K, R), not the number of relevant items found in the
    top K: a relevant item ranked past K lowers AP@K, and a top K made only of relevant items scores 1
    even when R > K. With K >= N it is the usual AP over the whole ranking.

    Text->image: each caption has one relevant image, so AP@K = 1 / rank when the image is in the top K
    (reciprocal rank cut at K). Image->text: an image's relevant items are all its captions (5 in
    Flickr8k / COCO); images with no caption are left out. Features and text_to_image as for
    retrieval_recall. Returns {"t2i_mAP@5": .., "t2i_mAP@10": .., "i2t_mAP@5": .., "i2t_mAP@10": ..}.
    """
    if ties not in _TIES:
        raise ValueError(f"ties must be one of {_TIES}, got {ties!r}")
    t2i = torch.as_tensor(list(text_to_image), dtype=torch.long, device=image_feats.device)
    image_feats, text_feats = image_feats.float(), text_feats.to(image_feats.device).float()
    _check_features(image_feats, text_feats, t2i)
    images = torch.arange(image_feats.shape[0], device=image_feats.device)
    t2i_ap = _map_rows(text_feats, image_feats, lambda a, b: t2i[a:b, None] == images[None, :], ks, ties)
    i2t_ap = _map_rows(image_feats, text_feats, lambda a, b: images[a:b, None] == t2i[None, :], ks, ties)
    out = {}
    for name, ap in (("t2i", t2i_ap), ("i2t", i2t_ap)):
        out.update({f"{name}_mAP@{k}": 100.0 * float(ap[:, j].mean()) if ap.shape[0] else float("nan")
                    for j, k in enumerate(ks)})
    return out


def _true_class_ranks(logits: torch.Tensor, labels: torch.Tensor, ties: str) -> torch.Tensor:
    """Rank of the true class among all classes per sample. logits [N, C], labels [N] -> long [N]"""
    if logits.ndim != 2 or labels.ndim != 1 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"expected logits [N, C] and labels [N], got {tuple(logits.shape)} and {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= logits.shape[1]):
        raise ValueError(f"labels must lie in [0, {logits.shape[1]}) (one logit column per class)")
    ranks = []
    step = _chunk_rows(logits.shape[1])
    for start in range(0, logits.shape[0], step):
        scores = logits[start:start + step].float()
        gt = labels[start:start + step]
        rows = torch.arange(scores.shape[0], device=scores.device)
        beats = _beats(scores, scores[rows, gt], ties)
        beats[rows, gt] = False
        ranks.append(beats.sum(dim=1))
    return torch.cat(ranks) if ranks else torch.empty(0, dtype=torch.long)


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor | Sequence[int], ks: Sequence[int] = (1, 5),
                  ties: str = "optimistic") -> dict[str, float]:
    """Top-k accuracy in percent. logits [N, C], labels [N] class indices -> {"top1": .., "top5": ..}.

    k larger than C is clipped to C (so top5 on 3 classes is 100). Keys keep the requested k.
    With N == 0 every value is nan.
    """
    labels = torch.as_tensor(labels, dtype=torch.long, device=logits.device)
    ranks = _true_class_ranks(logits, labels, ties)
    return {f"top{k}": _recall_at(ranks, min(k, logits.shape[1])) for k in ks}


def per_class_accuracy(logits: torch.Tensor, labels: torch.Tensor | Sequence[int], k: int = 1,
                       ties: str = "optimistic") -> torch.Tensor:
    """Top-k accuracy per class in percent. logits [N, C], labels [N] -> float64 [C];
    nan for classes with no sample. Its nanmean is the class-balanced ("mean per-class") accuracy."""
    labels = torch.as_tensor(labels, dtype=torch.long, device=logits.device)
    hits = (_true_class_ranks(logits, labels, ties) < min(k, logits.shape[1])).double()
    num_classes = logits.shape[1]
    correct = torch.zeros(num_classes, dtype=torch.float64, device=logits.device).index_add_(0, labels, hits)
    count = torch.zeros(num_classes, dtype=torch.float64, device=logits.device).index_add_(0, labels, torch.ones_like(hits))
    return (100.0 * correct / count).cpu()  # 0/0 -> nan for absent classes
