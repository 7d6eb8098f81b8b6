"""Shapes: a synthetic bilingual image-caption set, generated in code (no download).

Each image is one coloured shape on a flat, gradient or noisy background, described
by four attributes and captioned in English and Chinese:

    item = make_splits(ShapesConfig())["test"][0]
    item.render(64)                  # -> RGB PIL image, 64x64, identical on every machine
    item.caption("en")               # "a large red circle on the left"
    item.caption("zh")               # "左边有一个大的红色圆形"

Attributes: 6 shapes x 8 colours x 3 sizes x 5 positions (720 combinations), plus a
background style and a per-image seed that jitters position, rotation and texture.
Splits are fixed by `ShapesConfig.seed`: the same config gives the same items.

For training, `training_caption` draws a random language, phrasing and level of
detail ("a red circle", "圆形的照片", ...) and returns the attributes it mentions,
so a contrastive loss can treat every image that fits the caption as a positive.
`class_prompts` gives the zero-shot prompts for shape and colour classification.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ..messages import Msg

__all__ = ["ShapesConfig", "ShapeItem", "make_splits", "describe", "training_caption", "TrainingCaption", "class_prompts",
           "SHAPES", "COLOURS", "SIZES", "POSITIONS"]

# name -> Chinese name
SHAPES = {"circle": "圆形", "square": "正方形", "triangle": "三角形", "star": "五角星",
          "hexagon": "六边形", "cross": "十字形"}
# name -> (RGB, Chinese name); hues far apart so small shapes stay distinguishable on noise
COLOURS = {"red": ((220, 30, 30), "红色"), "orange": ((245, 140, 0), "橙色"), "yellow": ((240, 225, 20), "黄色"),
           "green": ((30, 170, 50), "绿色"), "blue": ((30, 70, 225), "蓝色"), "purple": ((140, 40, 190), "紫色"),
           "white": ((250, 250, 250), "白色"), "black": ((10, 10, 10), "黑色")}
# name -> (shape diameter as a fraction of the image side, Chinese adjective)
SIZES = {"small": (0.24, "小的"), "medium": (0.34, "中等大小的"), "large": (0.46, "大的")}
# name -> (centre x, centre y as fractions of the side, English phrase, Chinese phrase)
POSITIONS = {"left": (0.27, 0.5, "on the left", "左边"), "right": (0.73, 0.5, "on the right", "右边"),
             "top": (0.5, 0.27, "at the top", "上方"), "bottom": (0.5, 0.73, "at the bottom", "下方"),
             "center": (0.5, 0.5, "in the center", "中间")}
BACKGROUNDS = ("flat", "gradient", "noise")
ATTRIBUTES = ("shape", "colour", "size", "position")

_JITTER = 0.04      # random shift of the centre, fraction of the side: positions stay unambiguous
_MAX_ROTATION = 20  # degrees; a square rotated by 45 would read as a diamond
_NOISE_STD = 18     # grey levels of background noise
_TINT = 30          # how far a background channel may stray from grey
# Level of detail of a training caption -> probability. Partial captions teach the model
# what "红色圆形" or "a circle" alone means, which is how users query and classify.
_DETAIL = {("shape", "colour", "size", "position"): 0.35, ("shape", "colour"): 0.2,
           ("shape", "colour", "size"): 0.1, ("shape", "position"): 0.1, ("shape",): 0.15, ("colour",): 0.1}


@dataclass(frozen=True)
class ShapesConfig:
    n_train: int = 5000    # training images
    n_val: int = 500       # validation images (model selection)
    n_test: int = 1000     # held-out test images (reported metrics only)
    seed: int = 0          # fixes every split: same config, same images and captions


@dataclass(frozen=True)
class ShapeItem:
    shape: str
    colour: str
    size: str
    position: str
    background: str
    seed: int             # jitter, rotation, background colours and noise

    @property
    def attrs(self) -> dict[str, str]:
        return {"shape": self.shape, "colour": self.colour, "size": self.size, "position": self.position}

    def render(self, side: int = 64) -> Image.Image:
        """-> RGB image [side, side]; deterministic for a given item and side."""
        rng = np.random.default_rng(self.seed)
        img = Image.fromarray(_background(self.background, side, rng))
        cx, cy, _, _ = POSITIONS[self.position]
        cx, cy = (cx + rng.uniform(-_JITTER, _JITTER)) * side, (cy + rng.uniform(-_JITTER, _JITTER)) * side
        radius = SIZES[self.size][0] * side / 2
        angle = math.radians(rng.uniform(-_MAX_ROTATION, _MAX_ROTATION))
        fill = COLOURS[self.colour][0]
        draw = ImageDraw.Draw(img)
        if self.shape == "circle":
            draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
        else:
            draw.polygon(_polygon(self.shape, cx, cy, radius, angle), fill=fill)
        return img

    def caption(self, lang: str = "en", style: int = 0) -> str:
        """The full caption in `lang` ("en" | "zh"); `style` picks one of 3 phrasings."""
        return describe(self.attrs, lang, style)


def describe(attrs: dict[str, str], lang: str, style: int = 0) -> str:
    """Caption for any subset of the attributes, e.g. {"colour": "red"} -> "a photo of a red shape"."""
    if lang not in ("en", "zh"):
        raise ValueError(Msg("语言必须是 'en' 或 'zh'，实际为 {lang!r}", "language must be 'en' or 'zh', got {lang!r}",
                             lang=lang))
    return _describe_en(attrs, style % 3) if lang == "en" else _describe_zh(attrs, style % 3)


def _describe_en(a: dict[str, str], style: int) -> str:
    noun = " ".join(w for w in (a.get("size"), a.get("colour"), a.get("shape", "shape")) if w)
    article = "an" if noun[0] in "aeiou" else "a"
    where = f" {POSITIONS[a['position']][2]}" if "position" in a else ""
    return (f"{article} {noun}{where}", f"a photo of {article} {noun}{where}", f"there is {article} {noun}{where}")[style]


def _describe_zh(a: dict[str, str], style: int) -> str:
    size = SIZES[a["size"]][1] if "size" in a else ""
    colour = COLOURS[a["colour"]][1] if "colour" in a else ""
    noun = size + colour + (SHAPES[a["shape"]] if "shape" in a else "图形")
    if "position" in a:
        where = POSITIONS[a["position"]][3]
        return (f"{where}有一个{noun}", f"{noun}在{where}", f"图片{where}是一个{noun}")[style]
    return (f"一个{noun}", f"{noun}的照片", noun)[style]


@dataclass(frozen=True)
class TrainingCaption:
    text: str                       # e.g. "a red circle"
    attrs: dict[str, str]           # the attributes it mentions, e.g. {"colour": "red", "shape": "circle"}
    negative: str                   # the same words with the shape swapped, e.g. "a red star"
    negative_attrs: dict[str, str]


def training_caption(item: ShapeItem, rng: random.Random) -> TrainingCaption:
    """A random caption of `item` (language, phrasing, detail) and a hard negative for it.

    The negative swaps the shape (the colour when no shape is named): colour, size and
    position alone tell most images of a batch apart, so without such negatives the image
    tower learns shapes very slowly (NegCLIP's swapped-word negatives, Yuksekgonul et al. 2023)."""
    detail = rng.choices(list(_DETAIL), weights=list(_DETAIL.values()))[0]
    mentioned = {k: item.attrs[k] for k in detail}
    lang, style = rng.choice(("en", "zh")), rng.randrange(3)
    attr, table = ("shape", SHAPES) if "shape" in mentioned else ("colour", COLOURS)
    swapped = {**mentioned, attr: rng.choice([n for n in table if n != mentioned[attr]])}
    return TrainingCaption(describe(mentioned, lang, style), mentioned, describe(swapped, lang, style), swapped)


def class_prompts(attribute: str, lang: str = "en") -> tuple[list[str], list[str]]:
    """Zero-shot prompts for "shape" or "colour": (class names, one prompt per class),
    e.g. ("circle", "a photo of a circle") or ("red", "红色图形的照片")."""
    names = {"shape": list(SHAPES), "colour": list(COLOURS)}.get(attribute)
    if names is None:
        raise ValueError(Msg("零样本属性必须是 'shape' 或 'colour'，实际为 {attribute!r}",
                             "zero-shot attribute must be 'shape' or 'colour', got {attribute!r}", attribute=attribute))
    return names, [describe({attribute: n}, lang, style=1) for n in names]


def make_splits(config: ShapesConfig = ShapesConfig()) -> dict[str, list[ShapeItem]]:
    """-> {"train": [...], "val": [...], "test": [...]}; deterministic in `config`."""
    sizes = {"train": config.n_train, "val": config.n_val, "test": config.n_test}
    # one generator per split, so growing the training set never changes the test set
    return {name: _items(random.Random(f"shapes-{config.seed}-{name}"), n) for name, n in sizes.items()}


def _items(rng: random.Random, n: int) -> list[ShapeItem]:
    return [ShapeItem(rng.choice(list(SHAPES)), rng.choice(list(COLOURS)), rng.choice(list(SIZES)),
                      rng.choice(list(POSITIONS)), rng.choice(BACKGROUNDS), rng.getrandbits(32))
            for _ in range(n)]


def _background(kind: str, side: int, rng: np.random.Generator) -> np.ndarray:
    """-> uint8 [side, side, 3]: muted colours so every shape colour keeps its contrast."""
    base = _muted(rng)
    if kind == "flat":
        arr = np.broadcast_to(base, (side, side, 3)).copy()
    elif kind == "gradient":
        other = _muted(rng)
        t = np.linspace(0, 1, side)[:, None, None]
        arr = base * (1 - t) + other * t
        arr = np.broadcast_to(arr, (side, side, 3)) if rng.random() < 0.5 else np.broadcast_to(
            arr.transpose(1, 0, 2), (side, side, 3))
    else:
        arr = base + rng.normal(0, _NOISE_STD, size=(side, side, 3))
    return np.clip(arr, 0, 255).astype(np.uint8)


def _muted(rng: np.random.Generator) -> np.ndarray:
    """A greyish RGB colour: a grey level plus a small tint, never a saturated hue."""
    return rng.uniform(70, 190) + rng.uniform(-_TINT, _TINT, size=3)


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a regular shape of circumradius r, rotated by angle (radians)."""
    if shape == "square":
        pts = [(r * math.cos(a), r * math.sin(a)) for a in (math.pi / 4 + k * math.pi / 2 for k in range(4))]
    elif shape == "triangle":
        pts = [(r * math.cos(a), r * math.sin(a)) for a in (-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))]
    elif shape == "hexagon":
        pts = [(r * math.cos(k * math.pi / 3), r * math.sin(k * math.pi / 3)) for k in range(6)]
    elif shape == "star":
        pts = [((r if k % 2 == 0 else 0.42 * r) * math.cos(-math.pi / 2 + k * math.pi / 5),
                (r if k % 2 == 0 else 0.42 * r) * math.sin(-math.pi / 2 + k * math.pi / 5)) for k in range(10)]
    elif shape == "cross":
        w = r / 3
        pts = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w)]
    else:
        raise ValueError(Msg("未知的形状 {shape!r}；已知：{known}", "unknown shape {shape!r}; known: {known}",
                             shape=shape, known=list(SHAPES)))
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]
