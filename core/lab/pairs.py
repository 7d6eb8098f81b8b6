"""Image-caption pairs for training and evaluating the mini-CLIP: Shapes or Flickr8k, in memory.

    data = load_pairsets("shapes", size=64, seed=0)        # {"train": PairSet, "val": ..., "test": ...}
    evaluate_pairs(encoder, data["test"])                   # Recall@K both ways, zero-shot top-1 (Shapes)
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from . import shapes
from ..errors import DatasetError, ImageError
from ..images import load_image
from ..messages import Msg
from .datasets import read_flickr8k
from .metrics import retrieval_recall, topk_accuracy
from ..models.mini import image_to_uint8

__all__ = ["PairSet", "load_pairsets", "evaluate_pairs"]


@dataclass
class PairSet:
    """One split of image-caption pairs, images in memory.
    Captions carry attribute codes: a caption fits an image when every code it mentions (>= 0)
    equals the image's. Shapes: codes = (shape, colour, size, position) indices; Flickr8k: the
    image's own index, so each caption fits its own image only."""
    images: torch.Tensor                               # uint8 [N, 3, S, S]
    codes: torch.Tensor                                # long [N, A]
    eval_texts: dict[str, tuple[list[str], list[int]]]  # language -> (captions, text_to_image)
    items: list | None = None                          # Shapes: the ShapeItem per image
    captions: list[list[str]] | None = None            # Flickr8k: the captions per image
    labels: dict[str, torch.Tensor] | None = None      # Shapes zero-shot: "shape"/"colour" -> class index [N]
    min_count: int = 1                                 # tokens rarer than this in training text become [UNK]

    def __len__(self) -> int:
        return len(self.images)

    def sample_caption(self, i: int, rng: random.Random) -> list[tuple[str, list[int]]]:
        """Training texts for image i with their codes (-1 = attribute not mentioned): its caption
        first, then for Shapes a hard negative (a caption with the shape swapped)."""
        if self.items is None:
            return [(rng.choice(self.captions[i]), [i])]
        cap = shapes.training_caption(self.items[i], rng)
        return [(cap.text, _encode_attrs(cap.attrs)), (cap.negative, _encode_attrs(cap.negative_attrs))]

    def positives(self, idx: torch.Tensor, caption_codes: torch.Tensor) -> torch.Tensor:
        """images idx [B] x caption codes [T, A] -> bool [B, T], true where the caption fits"""
        img = self.codes[idx][:, None]  # [B, 1, A]
        cap = caption_codes[None]       # [1, T, A]
        return ((cap == img) | (cap < 0)).all(dim=-1)

    def vocab_texts(self) -> list[str]:
        if self.items is None:
            return [c for caps in self.captions for c in caps]
        texts = [it.caption(lang, style) for it in self.items for lang in ("en", "zh") for style in range(3)]
        return texts + [p for a in ("shape", "colour") for lang in ("en", "zh") for p in shapes.class_prompts(a, lang)[1]]


_ATTRS = ("shape", "colour", "size", "position")
_TABLES = {"shape": shapes.SHAPES, "colour": shapes.COLOURS, "size": shapes.SIZES, "position": shapes.POSITIONS}


def _encode_attrs(attrs: dict[str, str]) -> list[int]:
    return [list(_TABLES[a]).index(attrs[a]) if a in attrs else -1 for a in _ATTRS]


def _shapes_split(items: list, size: int) -> PairSet:
    images = (torch.stack([image_to_uint8(it.render(size), size) for it in items]) if items
              else torch.empty(0, 3, size, size, dtype=torch.uint8))
    codes = torch.tensor([[list(_TABLES[a]).index(it.attrs[a]) for a in _ATTRS] for it in items]).view(-1, len(_ATTRS))
    evals = {lang: ([it.caption(lang) for it in items], list(range(len(items)))) for lang in ("en", "zh")}
    return PairSet(images, codes, evals, items=items, labels={"shape": codes[:, 0], "colour": codes[:, 1]})


def _flickr_split(data, size: int) -> PairSet:
    """CaptionSet -> PairSet; unreadable images are skipped with a warning, never fatal."""
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    def decode(path):
        try:
            return image_to_uint8(load_image(path), size)
        except ImageError as e:
            warnings.warn(f"skipping {e}")
            return None
    with ThreadPoolExecutor(4) as pool:
        decoded = list(pool.map(decode, data.images))
    data = data.subset([i for i, d in enumerate(decoded) if d is not None])
    caps = [[] for _ in data.images]
    for c, i in zip(data.captions, data.text_to_image):
        caps[i].append(c)
    if not caps:
        raise DatasetError(Msg("这个 Flickr8k 划分中没有一张图片能读取；请检查图片文件夹",
                               "No image of this Flickr8k split could be read; check the image folder"))
    images = torch.stack([d for d in decoded if d is not None])
    return PairSet(images, torch.arange(len(caps))[:, None], {"en": (data.captions, data.text_to_image)},
                   captions=caps, min_count=2)


def _read_flickr(root: Path, seed: int, splits: Sequence[str]) -> dict:
    """Official split lists when present, else a fixed 6:1:1 split of all images by `seed`."""
    try:
        return {s: read_flickr8k(root, s) for s in splits}
    except DatasetError:
        everything = read_flickr8k(root, "all")
    order = list(range(len(everything.images)))
    random.Random(seed).shuffle(order)
    n = max(1, len(order) // 8)
    parts = {"test": order[:n], "val": order[n:2 * n], "train": order[2 * n:]}
    return {s: everything.subset(parts[s]) for s in splits}


def load_pairsets(spec: str, size: int, seed: int, shapes_sizes: tuple[int, int, int] = (5000, 500, 1000),
                  splits: Sequence[str] = ("train", "val", "test")) -> dict[str, PairSet]:
    """spec "shapes", "flickr8k:DIR" or "csv:FILE" -> {split: PairSet} with images at size x size."""
    if spec == "shapes":
        n_train, n_val, n_test = shapes_sizes
        items = shapes.make_splits(shapes.ShapesConfig(n_train, n_val, n_test, seed=seed))
        return {s: _shapes_split(items[s], size) for s in splits}
    if spec.startswith("flickr8k:"):
        return {s: _flickr_split(d, size) for s, d in _read_flickr(Path(spec[9:]), seed, splits).items()}
    if spec.startswith("csv:"):
        return {s: _captions_split(d, size) for s, d in _split_csv(Path(spec[4:]), seed, splits).items()}
    raise ValueError(Msg("未知的 --data {spec!r}；可选 'shapes'、'flickr8k:DIR' 或 'csv:FILE'",
                         "Unknown --data {spec!r}; expected 'shapes', 'flickr8k:DIR' or 'csv:FILE'", spec=spec))


def _split_csv(path: Path, seed: int, splits: Sequence[str]) -> dict:
    """A `path,caption` CSV (core/lab/csvpairs.py) split 6:1:1 by image, fixed by `seed`."""
    from .csvpairs import read_caption_csv
    everything = read_caption_csv(path)
    order = list(range(len(everything.images)))
    random.Random(seed).shuffle(order)
    n = max(1, len(order) // 8)
    parts = {"test": order[:n], "val": order[n:2 * n], "train": order[2 * n:]}
    return {s: everything.subset(parts[s]) for s in splits}


def _captions_split(data, size: int) -> PairSet:
    """As a Flickr8k split, but the captions may be in any language: Recall@K keys read "captions_..."."""
    pairs = _flickr_split(data, size)
    pairs.eval_texts = {"captions": pairs.eval_texts["en"]}
    return pairs


@torch.inference_mode()
def evaluate_pairs(encoder, data: PairSet) -> dict[str, float]:
    """Any Encoder on a PairSet -> {"en_t2i_R@1": ..., "zh_i2t_R@5": ..., "en_shape_top1": ...,
    "mean_recall": mean over languages}; percentages."""
    from PIL import Image
    pil = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in data.images]
    image_feats = encoder.encode_images(pil)
    out = {}
    for lang, (texts, t2i) in data.eval_texts.items():
        out.update({f"{lang}_{k}": v for k, v in retrieval_recall(image_feats, encoder.encode_texts(texts), t2i).items()})
        for attr, labels in (data.labels or {}).items():
            _, prompts = shapes.class_prompts(attr, lang)
            logits = image_feats @ encoder.encode_texts(prompts).T
            out[f"{lang}_{attr}_top1"] = topk_accuracy(logits, labels, ks=(1,))["top1"]
    out["mean_recall"] = sum(out[f"{lang}_mean_recall"] for lang in data.eval_texts) / len(data.eval_texts)
    return out
