"""Is int8 good enough on *this* library? A quantised encoder is compared with its fp32 twin on
a sample of the user's own images before it is used, and refused below par.

    note = check_int8(encoder, library)   # "int8 agrees with fp32 on 64 images of this library: ..."
                                          # or ModelUnavailableError with the numbers and the fix

Measured: for probe queries, the overlap of the top-10 text→image results over the sample
(int8 towers vs fp32 towers), and the cosine between int8 and fp32 embeddings of the same
images and texts. Real CLIP weights have activation outliers that random weights lack, so
nothing measured on random weights says anything about a real model: this check runs on the
real model, on the user's images. The result is remembered beside the int8 graphs
(`int8_agreement.json`, per library folder) and measured again when the library has doubled.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import ImageError, ModelUnavailableError
from ..images import load_image
from ..messages import Msg
from .ingest import sample_files
from .store import Library

__all__ = ["Int8Policy", "Agreement", "measure_agreement", "check_int8", "PROBE_TEXTS"]

PROBE_TEXTS = ["a photo of a cat", "a dog running on the grass", "a city street at night", "a plate of food",
               "mountains and a lake", "a person smiling", "a red car", "a child playing", "a bird in the sky",
               "a beach with people", "an old building", "a cup of coffee", "flowers in a garden", "a clock",
               "a group of people at a table", "a computer on a desk", "snow on trees", "a boat on the water",
               "a rocket", "a drawing of a circle"]
_RECORD = "int8_agreement.json"
# Agreement.source as remembered in _RECORD (English) -> how it is said to the user
_SOURCES = {"this library": Msg("本图库", "this library"),
            "this library and the bundled samples": Msg("本图库和自带的示例图片", "this library and the bundled samples"),
            "the bundled samples (the library is empty)": Msg("自带的示例图片（图库为空）",
                                                              "the bundled samples (the library is empty)")}


@dataclass(frozen=True)
class Int8Policy:
    min_overlap: float = 0.8    # mean top-10 overlap of text→image results, int8 vs fp32 (1.0 = same results)
    min_cosine: float = 0.98    # lowest cosine between an int8 and an fp32 image or text embedding
    sample: int = 64            # library images compared (evenly spaced over the library)
    min_images: int = 10        # fewer library images than this: the bundled samples make up the rest
    k: int = 10


@dataclass(frozen=True)
class Agreement:
    images: int            # images compared
    texts: int             # probe texts compared
    overlap: float         # mean top-k overlap of text→image results
    cosine: float          # lowest cosine, int8 vs fp32, over every image and text embedding
    source: str            # "this library" or "this library and the bundled samples"
    rows: int = 0          # library size when measured

    def passes(self, policy: Int8Policy) -> bool:
        return self.overlap >= policy.min_overlap and self.cosine >= policy.min_cosine

    def describe(self, policy: Int8Policy) -> Msg:
        return Msg("前 {k} 名重合度 {overlap:.2f}（要求 >= {min_overlap:.2f}），最低余弦相似度 {cosine:.4f}"
                   "（要求 >= {min_cosine:.4f}），基于{source}的 {images} 张图片和 {texts} 条探测查询",
                   "top-{k} overlap {overlap:.2f} (need >= {min_overlap:.2f}), lowest cosine "
                   "{cosine:.4f} (need >= {min_cosine:.4f}) on {images} images of {source} "
                   "and {texts} probe queries",
                   k=policy.k, overlap=self.overlap, min_overlap=policy.min_overlap, cosine=self.cosine,
                   min_cosine=policy.min_cosine, images=self.images, source=_SOURCES.get(self.source, self.source),
                   texts=self.texts)


def measure_agreement(int8, fp32, images: list, texts: list[str], k: int = 10) -> tuple[float, float]:
    """(mean top-k overlap of text→image rankings over `images`, lowest cosine int8 vs fp32)."""
    a, b = int8.encode_images(images), fp32.encode_images(images)
    ta, tb = int8.encode_texts(texts), fp32.encode_texts(texts)
    kk = min(k, len(images))
    top_a, top_b = (ta @ a.T).topk(kk).indices.tolist(), (tb @ b.T).topk(kk).indices.tolist()
    overlap = sum(len(set(x) & set(y)) for x, y in zip(top_a, top_b)) / (kk * len(texts))
    cosine = float(torch.cat([(a * b).sum(-1), (ta * tb).sum(-1)]).min())
    return overlap, cosine


def _sample_images(library: Library, policy: Int8Policy) -> tuple[list, str]:
    n = len(library)
    step = max(1, n // policy.sample)
    images = []
    for e in library.entries()[::step][:policy.sample]:
        try:
            images.append(load_image(e.path, e.name))
        except ImageError:
            continue   # a damaged file is `library verify`'s business, not this check's
    source = "this library"
    if len(images) < policy.min_images:
        for path in sample_files()[:policy.min_images - len(images)]:
            images.append(load_image(path))
        source = "this library and the bundled samples" if n else "the bundled samples (the library is empty)"
    return images, source


def _remembered(record: Path, key: str, rows: int) -> Agreement | None:
    try:
        found = json.loads(record.read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError):
        return None
    if not found or rows > 2 * max(found.get("rows", 0), 5):
        return None
    return Agreement(**found)


def check_int8(encoder, library: Library, policy: Int8Policy = Int8Policy()) -> Msg:
    """Measure (or recall) int8-vs-fp32 agreement on this library; a note to show the user, or
    ModelUnavailableError with the numbers when it is below `policy`."""
    record, key = Path(encoder.folder) / _RECORD, str(Path(library.root).resolve())
    found = _remembered(record, key, len(library))
    if found is None:
        images, source = _sample_images(library, policy)
        overlap, cosine = measure_agreement(encoder, encoder.fp32_twin(), images, PROBE_TEXTS, policy.k)
        found = Agreement(len(images), len(PROBE_TEXTS), overlap, cosine, source, len(library))
        _remember(record, key, found)
    if not found.passes(policy):
        raise ModelUnavailableError(Msg(
            "int8（{model}）与 fp32 的结果不够一致，不能使用：{details}。请改用 --runtime onnx（fp32，结果与 torch 相同）"
            "或 --runtime torch。",
            "int8 ({model}) does not agree well enough with fp32 to be used: "
            "{details}. Use --runtime onnx (fp32; same results as torch) or --runtime torch.",
            model=encoder.model_id, details=found.describe(policy)))
    return Msg("int8 与 fp32 结果一致：{details}。", "int8 agrees with fp32: {details}.", details=found.describe(policy))


def _remember(record: Path, key: str, agreement: Agreement) -> None:
    try:
        data = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else {}
        data[key] = asdict(agreement)
        record.write_text(json.dumps(data, indent=1), encoding="utf-8")
    except (OSError, ValueError):
        pass   # not remembered: measured again at the next start
