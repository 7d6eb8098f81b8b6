"""What the app's Learn tab shows about a CLIP, over one Workbench (its encoder and library):

    learn = wb.learn
    learn.embedding_map("pca", labels="cat, dog", query="a red circle")   # -> EmbeddingMap (2-D points)
    learn.similarity(["3f2a9c0e11d4", pil_image], ["a cat", "一只狗"])     # -> Similarity [images, texts]
    learn.probe("circle, square, star")                                   # -> ProbeReport (zero-shot vs probe)

Embedding maps are cached per (library generation, version, method, sample size): a second
look at an unchanged library costs nothing. Above `MAP_LIMIT` images a fixed random sample is
drawn, and the map says so. PCA is instant; t-SNE (scikit-learn) takes seconds per thousand
points. A text query lands where its embedding projects (PCA) or, for t-SNE, which has no
projection for new points, at the mean position of its 5 nearest images (said in the note).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import LabelError, ModelUnavailableError, UnknownModelError
from ..lru import LRU
from ..messages import Msg
from ..zeroshot import plan_prompts

__all__ = ["Learn", "EmbeddingMap", "Similarity", "ProbeReport", "MAP_LIMIT", "MAX_PICK", "METHODS"]

MAP_LIMIT = 5000        # points drawn at most; a larger library is sampled (seeded, so maps are stable)
TSNE_LIMIT = 3000       # t-SNE is O(n log n) but slow on a 2-core CPU: it samples down further
MAX_PICK = 8            # images and texts in a similarity matrix (CLIP's notebook shows 8 x 8)
PROBE_SCAN = 50_000     # library entries read when labels come from file names / captions
PROBE_C = 10.0          # inverse L2 strength of the probe on unit-norm features (few shots: weak regularisation)
METHODS = ("pca", "tsne")
_NEIGHBOURS = 5
_CACHE = 8


@dataclass(frozen=True)
class MapPoint:
    id: str                 # 12-character image id
    name: str
    x: float
    y: float
    label: str = ""         # zero-shot label (when labels were given)
    entry: object = None    # the library Entry (for thumbnails)


@dataclass(frozen=True)
class EmbeddingMap:
    method: str
    points: list[MapPoint]
    total: int                          # images in the library
    query: tuple[float, float] | None   # where the text query lands
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Similarity:
    matrix: np.ndarray      # [images, texts] cosine similarity
    texts: list[str]        # as typed
    notes: list[str]


@dataclass(frozen=True)
class ProbeReport:
    classes: list[str]
    train: int                  # labelled images the probe learned from
    test: int                   # held-out images both are scored on
    probe_accuracy: float       # percent
    zeroshot_accuracy: float    # percent
    per_class: list[tuple[str, int, int, float, float]]   # (class, train, test, probe %, zero-shot %)
    notes: list[str]


def _split_words(text: str) -> list[str]:
    return [w.strip() for w in re.split(r"[,，;；\n]", text or "") if w.strip()]


class _Projection:
    """One 2-D projection of a sample of rows: ids, xy, and how to place a new vector."""

    def __init__(self, rowids: np.ndarray, feats: torch.Tensor, method: str, seed: int = 0):
        self.rowids, self.feats, self.method = rowids, feats, method
        x = feats.numpy()
        if method == "pca":
            from sklearn.decomposition import PCA
            self.pca = PCA(2, random_state=seed).fit(x) if len(x) >= 2 else None
            self.xy = self.pca.transform(x) if self.pca is not None else np.zeros((len(x), 2))
        else:
            from sklearn.manifold import TSNE
            self.pca = None
            perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
            self.xy = (TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
                       if len(x) >= 4 else np.zeros((len(x), 2)))

    def place(self, vector: torch.Tensor) -> tuple[float, float]:
        if self.pca is not None:
            x, y = self.pca.transform(vector[None].numpy())[0]
            return float(x), float(y)
        near = (self.feats @ vector).topk(min(_NEIGHBOURS, len(self.feats))).indices.numpy()
        x, y = self.xy[near].mean(axis=0)
        return float(x), float(y)


class Learn:
    """The Learn tab's services over one Workbench (see the module docstring). Thread-safe."""

    def __init__(self, wb):
        self.wb = wb
        self._maps = LRU(_CACHE)   # (library, generation, version, method, limit) -> _Projection

    # ------------------------------------------------------------ embedding map

    def _projection(self, method: str, limit: int) -> tuple[_Projection, list[str]]:
        lib = self.wb.library
        lib.refresh()
        notes = []
        limit = min(limit, TSNE_LIMIT) if method == "tsne" else limit
        key = (str(lib.root), lib.view().generation, lib.version, method, limit)
        cached = self._maps.get(key)
        ids = lib.live_ids()
        if len(ids) > limit:
            ids = np.sort(np.random.default_rng(0).choice(ids, limit, replace=False))
            notes.append(f"sample:{limit}:{len(lib)}")
        if cached is None:
            cached = _Projection(ids, lib.vectors_of(ids), method)   # outside the lock: t-SNE takes seconds
            self._maps.put(key, cached)
        return cached, notes

    def embedding_map(self, method: str = "pca", labels: str = "", query: str = "", lang: str = "en",
                      limit: int = MAP_LIMIT, caller=None) -> EmbeddingMap:
        """2-D map of the library's embeddings; points coloured by zero-shot label when `labels`
        (comma-separated, zh or en) are given; `query` text placed on it. Notes are short codes
        the UI words: "sample:N:TOTAL", "knn", "empty", or a core note verbatim. An image waiting for
        the teacher's review is not on the map of a `caller` who may not see it (core/safety)."""
        if method not in METHODS:
            raise LabelError(Msg("未知的投影方法 {method!r}；可选：{methods}",
                                 "Unknown projection {method!r}; expected one of {methods}",
                                 method=method, methods=METHODS))
        if not len(self.wb.library):
            return EmbeddingMap(method, [], 0, None, ["empty"])
        proj, notes = self._projection(method, limit)
        names = [""] * len(proj.rowids)
        if _split_words(labels):
            shown, matrix, note = self._classes(labels, "single", lang)
            names = [shown[i] for i in (proj.feats @ matrix.T).argmax(dim=1).tolist()]
            notes += [note] if note else []
        spot = None
        if (query or "").strip():
            text, note = self.wb.plan_query(query.strip())
            spot = proj.place(self.wb.encoder.encode_texts([text])[0])
            notes += [n for n in (note, "knn" if method == "tsne" else None) if n]
        entries = [self.wb.library.entry(int(r)) for r in proj.rowids]
        hidden = self.wb.screen.hidden(caller)
        points = [MapPoint(e.id, e.name, float(x), float(y), label, e)
                  for e, (x, y), label in zip(entries, proj.xy, names) if e.sha256 not in hidden]
        return EmbeddingMap(method, points, len(self.wb.library), spot, notes)

    def _classes(self, labels: str, templates: str, lang: str) -> tuple[list[str], torch.Tensor, str | None]:
        """Zero-shot class matrix [C, D] for typed labels, planned for the encoder (as wb.classify)."""
        def translate(texts):
            try:
                return self.wb.translate(texts, to="en")
            except (ModelUnavailableError, UnknownModelError):   # no translator: the plan's note says so
                return None
        plan = plan_prompts(self.wb.encoder, ",".join(_split_words(labels)), templates, lang, translate)
        return plan.labels, self.wb.classifier.classes(plan.prompt_labels, plan.templates), plan.note

    # ------------------------------------------------------------ similarity matrix

    def similarity(self, images: list, texts: list[str]) -> Similarity:
        """Cosine similarity of up to 8 images (library ids: stored vectors; or image inputs) and
        up to 8 texts (Chinese is translated for an English-only model, with a note)."""
        texts = [t.strip() for t in texts if t and t.strip()]
        if not images or not texts:
            raise LabelError(Msg("请至少给出一张图片和一段文字", "Give at least one image and one text"))
        if len(images) > MAX_PICK or len(texts) > MAX_PICK:
            raise LabelError(Msg("最多 {n} 张图片和 {n} 段文字", "At most {n} images and {n} texts", n=MAX_PICK))
        feats = torch.stack([self._image_vector(im) for im in images])
        planned = [self.wb.plan_query(t) for t in texts]
        notes = list(dict.fromkeys(n for _, n in planned if n))
        unknown = self.wb.unknown_words(*texts)
        if unknown:   # a narrow model (the bundled one knows coloured shapes) scores these by guess
            notes.append(Msg("模型从未见过这些词：{words}；含有它们的文字，其相似度只是猜测。",
                             "The model has never seen these words: {words}; the similarities of the texts with "
                             "them are guesses.", words=", ".join(unknown)))
        text_feats = self.wb.encoder.encode_texts([p for p, _ in planned])
        return Similarity((feats @ text_feats.T).numpy(), texts, notes)

    def _image_vector(self, image) -> torch.Tensor:
        if isinstance(image, str) and re.fullmatch(r"[0-9a-fA-F]{6,64}", image.strip()):
            return torch.nn.functional.normalize(self.wb.library.vector(image.strip()).float(), dim=-1)
        return self.wb.encoder.encode_images([self.wb.image(image)])[0]

    # ------------------------------------------------------------ zero-shot vs linear probe

    def probe(self, classes: str, assignments: str = "", templates: str = "single", lang: str = "en",
              test_fraction: float = 0.5, seed: int = 0) -> ProbeReport:
        """Label library images (lines "label: id id ...", else every image whose name or stored
        caption contains exactly one class word), hold out `test_fraction` per class, train a
        logistic-regression probe on the stored features, and score it and zero-shot on the
        held-out images. LabelError when fewer than two classes have two images."""
        names = _split_words(classes)
        if len(names) < 2:
            raise LabelError(Msg("请至少输入两个类别名，例如“猫, 狗”", "Type at least two class names, e.g. 'cat, dog'"))
        rows, notes = self._labelled(names, assignments)
        counts = np.bincount([c for _, c in rows], minlength=len(names))
        used = [i for i in range(len(names)) if counts[i] >= 2]
        notes += [f"few:{names[i]}:{counts[i]}" for i in range(len(names)) if counts[i] < 2]
        if len(used) < 2:
            raise LabelError(Msg("有两张已标注图片的类别不足两个；请多标注一些（每行写 'label: id id'）",
                                 "Fewer than two classes have two labelled images; label more (lines 'label: id id')"))
        rows = [(r, used.index(c)) for r, c in rows if c in used]
        train, test = _stratified([c for _, c in rows], test_fraction, seed)
        feats = self.wb.library.vectors_of(np.array([r for r, _ in rows]))
        feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        y = np.array([c for _, c in rows])
        probe_pred = _fit_probe(feats[train].numpy(), y[train], feats[test].numpy())
        shown, matrix, note = self._classes(",".join(names[i] for i in used), templates, lang)
        notes += [note] if note else []
        zs_pred = (feats[test] @ matrix.T).argmax(dim=1).numpy()
        per_class = [(shown[c], int((y[train] == c).sum()), int((y[test] == c).sum()),
                      _pct(probe_pred[y[test] == c] == c), _pct(zs_pred[y[test] == c] == c)) for c in range(len(used))]
        return ProbeReport(shown, len(train), len(test), _pct(probe_pred == y[test]), _pct(zs_pred == y[test]),
                           per_class, notes)

    def _labelled(self, names: list[str], assignments: str) -> tuple[list[tuple[int, int]], list[str]]:
        """[(rowid, class index)] from "label: id id" lines, else from names / captions."""
        lowered = [n.lower() for n in names]
        rows, notes = [], []
        for line in (assignments or "").splitlines():
            label, sep, ids = line.partition(":") if ":" in line else line.partition("：")
            if not sep or not label.strip():
                continue
            if label.strip().lower() not in lowered:
                raise LabelError(Msg("{label!r} 不在类别 {names} 之中", "{label!r} is not one of the classes {names}",
                                     label=label.strip(), names=names))
            for image_id in ids.replace(",", " ").split():
                rows.append((self.wb.library.find(image_id).rowid, lowered.index(label.strip().lower())))
        if rows:
            return rows, notes
        entries = self.wb.entries(0, PROBE_SCAN)
        if len(self.wb.library) > PROBE_SCAN:
            notes.append(f"scan:{PROBE_SCAN}")
        for e in entries:
            text = " ".join([e.name, e.meta.get("caption_en", ""), e.meta.get("caption_zh", "")]).lower()
            hits = [i for i, n in enumerate(lowered) if n in text]
            if len(hits) == 1:
                rows.append((e.rowid, hits[0]))
        return rows, notes


def _stratified(labels: list[int], test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test): per class at least one of each, `test_fraction` held out."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in sorted(set(labels)):
        idx = rng.permutation([i for i, l in enumerate(labels) if l == c])
        k = min(len(idx) - 1, max(1, round(len(idx) * test_fraction)))
        test += idx[:k].tolist()
        train += idx[k:].tolist()
    return np.array(sorted(train)), np.array(sorted(test))


def _fit_probe(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """The CLIP paper's linear probe: L2-regularised logistic regression (L-BFGS) on frozen features."""
    from sklearn.linear_model import LogisticRegression
    clf = LogisticRegression(C=PROBE_C, max_iter=1000)
    return clf.fit(x_train, y_train).predict(x_test)


def _pct(hits: np.ndarray) -> float:
    return round(100.0 * float(np.mean(hits)), 1) if len(hits) else 0.0
