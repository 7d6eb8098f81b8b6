"""Readers for evaluation datasets on disk. They read file lists and labels only; images
are decoded later, by the evaluation pipeline, so a broken image never stops a reader.

Classification (zero-shot):
  * ImageNet validation, flat layout: `ILSVRC2012_val_00000001.JPEG` ... in one folder, plus
    one ground-truth file, looked for in that folder and its parent (or given explicitly):
      - `LOC_val_solution.csv` (Kaggle): `ImageId,PredictionString`, the first token of the
        prediction string is the wnid (`n01751748 ...`);
      - `val.txt` / `val_labels.txt` (Caffe style): `ILSVRC2012_val_00000001.JPEG 65`, a 0-based
        standard class index or a wnid as the second field;
      - `ILSVRC2012_validation_ground_truth.txt` (official devkit): one 1-based ILSVRC2012_ID per
        line in image order; those ids are *not* the standard order, so it needs the devkit's
        `meta.mat` beside it (read with scipy).
    Standard class index = position of the wnid in the sorted wnid list (assets/eval/imagenet_wnids.txt).
  * Class folders (ImageFolder-like): `root/<class>/**/*.jpg`; class names are the folder
    names, sorted. When every folder is a wnid (`n01440764`) the classes are ImageNet classes.

Retrieval (image-text):
  * Karpathy split JSON (`dataset_coco.json`, `dataset_flickr30k.json`, `dataset_flickr8k.json`):
    `images[].split` (train / restval / val / test), `filepath` (COCO only), `filename`,
    `sentences[].raw`.
  * Flickr8k original: `captions.txt` (CSV, header `image,caption`) or `Flickr8k.token.txt`
    (`img.jpg#0<TAB>caption`), with split lists `Flickr_8k.{train,dev,test}Images.txt`.
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..errors import DatasetError
from ..images import IMAGE_EXTENSIONS, iter_image_files
from ..messages import Msg
from ..settings import ASSETS_DIR

__all__ = ["ClassificationSet", "CaptionSet", "read_imagenet_val", "read_class_folders",
           "read_classification", "read_karpathy", "read_flickr8k", "read_retrieval", "imagenet_wnids",
           "is_wnid"]

_WNIDS_FILE = ASSETS_DIR / "eval" / "imagenet_wnids.txt"
_WNID = re.compile(r"^n\d{8}$")
_GT_NAMES = ("LOC_val_solution.csv", "val.txt", "val_labels.txt", "ILSVRC2012_validation_ground_truth.txt")
_SPLITS = ("train", "val", "test", "all")




@dataclass
class ClassificationSet:
    """Images with one class each. labels[i] indexes classes."""
    images: list[Path]
    labels: list[int]
    classes: list[str]          # folder names, or the 1000 ImageNet wnids in standard order
    layout: str                 # "imagenet-val" | "folders"
    notes: list[str] = field(default_factory=list)  # what the reader noticed (unlabelled files, ...)

    def subset(self, keep: Sequence[int]) -> "ClassificationSet":
        return ClassificationSet([self.images[i] for i in keep], [self.labels[i] for i in keep],
                                 self.classes, self.layout, list(self.notes))


@dataclass
class CaptionSet:
    """Images with one or more captions each. text_to_image[j] is caption j's image index."""
    images: list[Path]
    captions: list[str]
    text_to_image: list[int]
    name: str                   # e.g. "flickr30k", "coco", "flickr8k"
    split: str

    def subset(self, keep: Sequence[int]) -> "CaptionSet":
        """Only the images at `keep` (in that order) and their captions, re-indexed."""
        new_index = {old: new for new, old in enumerate(keep)}
        pairs = [(c, new_index[i]) for c, i in zip(self.captions, self.text_to_image) if i in new_index]
        return CaptionSet([self.images[i] for i in keep], [c for c, _ in pairs], [i for _, i in pairs],
                          self.name, self.split)


def is_wnid(name: str) -> bool:
    return bool(_WNID.match(name))


def imagenet_wnids() -> list[str]:
    """The 1000 ImageNet-1k wnids; index = standard class index."""
    return _WNIDS_FILE.read_text(encoding="ascii").split()


# ---------------------------------------------------------------- classification

def _find_ground_truth(root: Path) -> Path | None:
    for folder in (root, root.parent):
        for name in _GT_NAMES:
            if (folder / name).is_file():
                return folder / name
    return None


def _gt_kaggle(path: Path, index: dict[str, int]) -> dict[str, int]:
    out = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            wnid = (row.get("PredictionString") or "").split()[:1]
            if not wnid or wnid[0] not in index:
                raise DatasetError(Msg("{path}：行 {row} 没有可识别的 wnid；应为 'ImageId,PredictionString' 格式",
                                       "{path}: row {row} has no known wnid; expected 'ImageId,PredictionString'",
                                       path=path, row=row))
            out[row["ImageId"]] = index[wnid[0]]
    return out


def _gt_val_txt(path: Path, index: dict[str, int]) -> dict[str, int]:
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not (parts[1].isdigit() or parts[1] in index):
            raise DatasetError(Msg("{path}:{n}：应为 'FILENAME CLASS'（CLASS 是从 0 开始的类别序号或 wnid），"
                                   "实际为 {line!r}",
                                   "{path}:{n}: expected 'FILENAME CLASS' with a 0-based class index or a wnid, "
                                   "got {line!r}", path=path, n=n, line=line))
        label = int(parts[1]) if parts[1].isdigit() else index[parts[1]]
        if not 0 <= label < len(index):
            raise DatasetError(Msg("{path}:{n}：类别序号 {label} 不在 0..{last} 范围内",
                                   "{path}:{n}: class index {label} outside 0..{last}",
                                   path=path, n=n, label=label, last=len(index) - 1))
        out[Path(parts[0]).stem] = label
    return out


def _gt_devkit(path: Path, index: dict[str, int]) -> dict[str, int]:
    meta = next((p for p in (path.parent / "meta.mat", path.parent.parent / "data" / "meta.mat") if p.is_file()), None)
    if meta is None:
        raise DatasetError(Msg("{path} 存的是 devkit 的 ILSVRC2012_ID，旁边需要有 devkit 的 meta.mat 才能对应到类别序号；"
                               "请把 meta.mat 放在那里，或改用 LOC_val_solution.csv 或 val.txt",
                               "{path} holds devkit ILSVRC2012_IDs, which need the devkit's meta.mat beside it to map "
                               "to class indices; put meta.mat there, or use LOC_val_solution.csv or a val.txt instead",
                               path=path))
    try:
        import scipy.io
    except ImportError:
        raise DatasetError(Msg("读取 devkit 的 {meta} 需要 scipy（pip install scipy）；也可以改用 "
                               "LOC_val_solution.csv 或 val.txt",
                               "Reading the devkit's {meta} needs scipy (pip install scipy); or use "
                               "LOC_val_solution.csv or a val.txt instead", meta=meta)) from None
    synsets = scipy.io.loadmat(str(meta), squeeze_me=True)["synsets"]
    id_to_wnid = {int(s[0]): str(s[1]) for s in synsets if int(s[4]) == 0}  # leaves = the 1000 classes
    ids = [int(x) for x in path.read_text(encoding="ascii").split()]
    try:
        return {f"ILSVRC2012_val_{n:08d}": index[id_to_wnid[i]] for n, i in enumerate(ids, 1)}
    except KeyError as e:
        raise DatasetError(Msg("{path} 提到了类别 {cls}，但 {meta} 的 1000 个类别中没有它",
                               "{path} names class {cls}, which {meta} does not list among the 1000 classes",
                               path=path, cls=e.args[0], meta=meta)) from None


def read_imagenet_val(root: Path, ground_truth: Path | None = None) -> ClassificationSet:
    """Flat ImageNet validation folder + a ground-truth file (see the module docstring)."""
    root = Path(root)
    gt = Path(ground_truth) if ground_truth else _find_ground_truth(root)
    if gt is None:
        raise DatasetError(Msg("{root} 及其上级文件夹中没有 ImageNet 标注文件；需要以下之一：{names}，"
                               "或传入 --ground-truth FILE",
                               "No ImageNet ground-truth file in {root} or its parent; expected one of "
                               "{names}, or pass --ground-truth FILE", root=root, names=", ".join(_GT_NAMES)))
    wnids = imagenet_wnids()
    index = {w: i for i, w in enumerate(wnids)}
    reader = (_gt_kaggle if gt.suffix == ".csv" else
              _gt_devkit if gt.name == "ILSVRC2012_validation_ground_truth.txt" else _gt_val_txt)
    truth = reader(gt, index)
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    images, labels = [], []
    for p in files:
        if p.stem in truth:
            images.append(p)
            labels.append(truth[p.stem])
    if not images:
        raise DatasetError(Msg("{root} 中的 {count} 张图片都不在 {gt} 里；"
                               "请检查文件名是否对得上（ILSVRC2012_val_00000001.JPEG ...）",
                               "None of the {count} images in {root} is listed in {gt}; "
                               "check that the file names match (ILSVRC2012_val_00000001.JPEG ...)",
                               count=len(files), root=root, gt=gt.name))
    notes = [f"ground truth: {gt.name}"]
    if len(files) > len(images):
        notes.append(f"{len(files) - len(images)} image(s) not in {gt.name} were ignored")
    return ClassificationSet(images, labels, wnids, "imagenet-val", notes)


def read_class_folders(root: Path) -> ClassificationSet:
    """root/<class>/... images; classes are the sub-folder names, sorted (hidden ones skipped)."""
    root = Path(root)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DatasetError(Msg("{root} 下没有类别子文件夹；应为 root/<class name>/<images>",
                               "{root} has no class sub-folders; expected root/<class name>/<images>", root=root))
    images, labels = [], []
    for label, name in enumerate(classes):
        for p in iter_image_files([root / name]):
            images.append(p)
            labels.append(label)
    if not images:
        raise DatasetError(Msg("{root} 的类别文件夹下没有图片（{extensions}）",
                               "No images ({extensions}) under the class folders of {root}",
                               extensions=", ".join(sorted(IMAGE_EXTENSIONS)), root=root))
    used = set(labels)
    empty = [c for i, c in enumerate(classes) if i not in used]
    notes = [f"{len(empty)} empty class folder(s) kept as candidate classes: {', '.join(empty[:10])}"] if empty else []
    return ClassificationSet(images, labels, classes, "folders", notes)


def read_classification(root: Path, layout: str = "auto", ground_truth: Path | None = None) -> ClassificationSet:
    """layout "imagenet" | "folders" | "auto": imagenet when there is a ground-truth file (or
    images directly in root), folders when root has sub-folders."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(Msg("{root} 不是文件夹；--data 需要数据集所在的文件夹",
                               "{root} is not a directory; --data takes the dataset folder", root=root))
    if layout == "auto":
        flat = any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in root.iterdir())
        layout = "imagenet" if ground_truth or flat or _find_ground_truth(root) else "folders"
    if layout == "imagenet":
        return read_imagenet_val(root, ground_truth)
    if layout == "folders":
        return read_class_folders(root)
    raise DatasetError(Msg("未知的布局 {layout!r}；可选 auto、imagenet 或 folders",
                           "Unknown layout {layout!r}; expected auto, imagenet or folders", layout=layout))


# ---------------------------------------------------------------- retrieval

def _check_split(split: str) -> str:
    if split not in _SPLITS:
        raise DatasetError(Msg("未知的划分 {split!r}；可选：{splits}", "Unknown split {split!r}; expected one of {splits}",
                               split=split, splits=", ".join(_SPLITS)))
    return split


def _pick_base(candidates: list[Path], probe: str) -> Path:
    """The first folder in which `probe` (a relative image path) exists, else the first one."""
    return next((c for c in candidates if (c / probe).is_file()), candidates[0])


def read_karpathy(path: Path, split: str = "test", image_root: Path | None = None) -> CaptionSet:
    """A Karpathy-split JSON. Images are looked for under image_root (default: the JSON's folder,
    then its images/, flickr30k-images/ and Flicker8k_Dataset/ sub-folders) + filepath + filename."""
    path, split = Path(path), _check_split(split)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        entries = doc["images"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetError(Msg("{path} 不是带 'images' 列表的 Karpathy 划分 JSON（{error}）",
                               "{path} is not a Karpathy-split JSON with an 'images' list ({error})",
                               path=path, error=str(e))) from None
    wanted = {"train": ("train", "restval"), "val": ("val",), "test": ("test",)}.get(split)
    chosen = [e for e in entries if wanted is None or e.get("split") in wanted]
    if not chosen:
        raise DatasetError(Msg("{path} 的 {split!r} 划分中没有图片", "{path} has no images in split {split!r}",
                               path=path, split=split))
    if any("filename" not in e for e in chosen):
        raise DatasetError(Msg("{path}：有图片条目缺少 'filename'；应为 Karpathy 划分格式",
                               "{path}: an image entry has no 'filename'; expected the Karpathy split format",
                               path=path))
    rel = [Path(e.get("filepath") or "") / e["filename"] for e in chosen]
    base = Path(image_root) if image_root else _pick_base(
        [path.parent / d for d in ("", "images", "flickr30k-images", "Flicker8k_Dataset")], str(rel[0]))
    captions, t2i = [], []
    for i, e in enumerate(chosen):
        for s in e.get("sentences", []):
            captions.append((s.get("raw") or " ".join(s.get("tokens", []))).strip())
            t2i.append(i)
    name = str(doc.get("dataset") or path.stem.replace("dataset_", ""))
    return CaptionSet([base / r for r in rel], captions, t2i, name, split)


def _flickr8k_captions(root: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if (root / "captions.txt").is_file():
        with open(root / "captions.txt", newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not {"image", "caption"} <= set(reader.fieldnames or ()):
                raise DatasetError(Msg("{file} 的第一行必须是表头 'image,caption'",
                                       "{file} must start with the header line 'image,caption'",
                                       file=root / "captions.txt"))
            for row in reader:
                out.setdefault(row["image"].strip(), []).append(row["caption"].strip())
    elif (root / "Flickr8k.token.txt").is_file():
        for line in (root / "Flickr8k.token.txt").read_text(encoding="utf-8").splitlines():
            if "\t" in line:
                key, caption = line.split("\t", 1)
                out.setdefault(key.rsplit("#", 1)[0], []).append(caption.strip())
    else:
        raise DatasetError(Msg("{root} 中没有 Flickr8k 描述；需要 captions.txt（image,caption）"
                               "或 Flickr8k.token.txt（img.jpg#0<TAB>caption）",
                               "No Flickr8k captions in {root}; expected captions.txt (image,caption) "
                               "or Flickr8k.token.txt (img.jpg#0<TAB>caption)", root=root))
    return out


def _flickr8k_split(root: Path, split: str, captions: dict[str, list[str]]) -> list[str]:
    if split == "all":
        return sorted(captions)
    name = {"train": "Flickr_8k.trainImages.txt", "val": "Flickr_8k.devImages.txt",
            "test": "Flickr_8k.testImages.txt"}[split]
    found = next((p for p in (root / name, root.parent / name) if p.is_file()), None)
    if found is None:
        raise DatasetError(Msg("在 {root} 中找不到划分列表 {name}；请补上（Flickr8k_text.zip 里有），"
                               "或传入 --split all 使用所有带描述的图片",
                               "Split list {name} not found in {root}; add it (Flickr8k_text.zip has it) "
                               "or pass --split all to use every captioned image", name=name, root=root))
    return [s.strip() for s in found.read_text(encoding="utf-8").split() if s.strip()]


def read_flickr8k(root: Path, split: str = "test", image_root: Path | None = None) -> CaptionSet:
    """Original Flickr8k files in `root` (see the module docstring). Images are looked for in
    image_root, else root/Images (Kaggle), root/Flicker8k_Dataset (original) or root."""
    root, split = Path(root), _check_split(split)
    captions = _flickr8k_captions(root)
    names = [n for n in _flickr8k_split(root, split, captions) if n in captions]
    if not names:
        raise DatasetError(Msg("{root} 的 {split!r} 划分中没有带描述的图片", "No captioned images in split {split!r} of {root}",
                               split=split, root=root))
    base = Path(image_root) if image_root else _pick_base(
        [root / "Images", root / "Flicker8k_Dataset", root / "images", root], names[0])
    texts, t2i = [], []
    for i, n in enumerate(names):
        texts += captions[n]
        t2i += [i] * len(captions[n])
    return CaptionSet([base / n for n in names], texts, t2i, "flickr8k", split)


def read_retrieval(data: Path, fmt: str = "auto", split: str = "test", image_root: Path | None = None) -> CaptionSet:
    """fmt "karpathy" (a JSON file, or a folder holding one dataset_*.json) | "flickr8k" | "auto"."""
    data = Path(data)
    jsons = sorted(data.glob("dataset_*.json")) if data.is_dir() else [data]
    if fmt == "auto":
        fmt = "karpathy" if data.suffix == ".json" or (data.is_dir() and jsons) else "flickr8k"
    if fmt == "karpathy":
        if len(jsons) != 1 or not jsons[0].is_file():
            raise DatasetError(Msg("{data} 处应有一个 Karpathy JSON（dataset_*.json），实际找到 {found}；"
                                   "请用 --data 直接传入该文件",
                                   "Expected one Karpathy JSON (dataset_*.json) at {data}, found "
                                   "{found}; pass the file itself with --data",
                                   data=data, found=[j.name for j in jsons] or "none"))
        return read_karpathy(jsons[0], split, image_root)
    if fmt == "flickr8k":
        return read_flickr8k(data if data.is_dir() else data.parent, split, image_root)
    raise DatasetError(Msg("未知的格式 {fmt!r}；可选 auto、karpathy 或 flickr8k",
                           "Unknown format {fmt!r}; expected auto, karpathy or flickr8k", fmt=fmt))
