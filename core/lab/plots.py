"""Training plots for a mini-CLIP run folder (matplotlib, Agg backend: no display needed).

Written at the end of `python -m core.train ...` and again on demand with
`python -m core.train plot runs/NAME` (uses the run's config.json, log.json and best.pt):

    curves.png     training loss, validation Recall@K and zero-shot top-1 per epoch
    retrieval.png  text -> image top-5 for a few sample queries (English and Chinese)
    tsne.png       t-SNE of validation image and caption embeddings, coloured by class

Chinese text needs a CJK font (Noto Sans CJK, WenQuanYi, SimHei, ...); without one
matplotlib draws empty boxes for the Chinese characters, and the plots are otherwise intact.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display, safe in threads of a server
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

__all__ = ["plot_curves", "plot_retrieval_grid", "plot_tsne", "plot_run", "replot", "plot_finetune"]

_FONTS = ["DejaVu Sans", "Noto Sans CJK SC", "Noto Sans SC", "WenQuanYi Zen Hei", "SimHei", "Microsoft YaHei",
          "PingFang SC"]  # first Latin, then any CJK font the machine has
_SHAPES_QUERIES = ["红色圆形", "a blue square", "左边有一个大的黄色三角形", "a green star at the bottom"]
_TSNE_POINTS = 300  # images (and as many captions) in the t-SNE: enough structure, seconds of CPU
_DPI = 110


def _style() -> None:
    from matplotlib import font_manager
    installed = {f.name for f in font_manager.fontManager.ttflist}
    plt.rcParams["font.family"] = [f for f in _FONTS if f in installed] or ["DejaVu Sans"]


def plot_curves(log: Sequence[dict], out: Path) -> Path:
    """log rows (log.json) -> PNG with loss, validation recall and zero-shot accuracy per epoch."""
    _style()
    epochs = [r["epoch"] for r in log]
    recall_keys = [k for k in log[-1] if k.startswith("val_") and ("t2i_R@" in k or "i2t_R@5" in k or k == "val_mean_recall")]
    zs_keys = [k for k in log[-1] if k.endswith("_top1")]
    fig, axes = plt.subplots(1, 3 if zs_keys else 2, figsize=(14 if zs_keys else 10, 4))
    axes[0].plot(epochs, [r["train_loss"] for r in log], marker="o")
    axes[0].set(title="training loss (symmetric InfoNCE)", xlabel="epoch")
    for k in recall_keys:
        axes[1].plot(epochs, [r[k] for r in log], marker=".", label=k[4:])
    axes[1].set(title="validation Recall@K (%)", xlabel="epoch")
    axes[1].legend(fontsize=7)
    for k in zs_keys:
        axes[2].plot(epochs, [r[k] for r in log], marker=".", label=k[4:])
    if zs_keys:
        axes[2].set(title="zero-shot top-1 (%)", xlabel="epoch")
        axes[2].legend(fontsize=7)
    return _save(fig, out)


def plot_retrieval_grid(encoder, images: Sequence[Image.Image], queries: Sequence[str], out: Path, k: int = 5) -> Path:
    """One row per query: its top-k images by cosine similarity, with the scores."""
    _style()
    feats = encoder.encode_images(list(images))
    scores = encoder.encode_texts(list(queries)) @ feats.T  # [Q, N]
    top = scores.topk(min(k, len(images)), dim=1)
    fig, axes = plt.subplots(len(queries), top.indices.shape[1], figsize=(1.8 * k, 2.0 * len(queries)), squeeze=False)
    for q, query in enumerate(queries):
        for j, (idx, s) in enumerate(zip(top.indices[q].tolist(), top.values[q].tolist())):
            ax = axes[q][j]
            ax.imshow(images[idx])
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_xlabel(f"{s:.2f}", fontsize=8)
        axes[q][0].set_ylabel(query, fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle(f"text -> image top-{k} ({encoder.model_id})", fontsize=9)
    return _save(fig, out)


def plot_tsne(image_feats: torch.Tensor, text_feats: torch.Tensor, out: Path, labels: Sequence[int] | None = None,
              class_names: Sequence[str] | None = None, seed: int = 0) -> Path:
    """2-D t-SNE of image (dots) and text (crosses) embeddings [N, D]; colours = labels when given."""
    from sklearn.manifold import TSNE
    _style()
    both = torch.cat([image_feats, text_feats]).float().numpy()
    xy = TSNE(n_components=2, perplexity=min(30, max(2, len(both) // 4)), init="pca",
              random_state=seed).fit_transform(both)
    n = len(image_feats)
    colours = list(labels) * 2 if labels is not None else None
    fig, ax = plt.subplots(figsize=(7, 6))
    sc = ax.scatter(xy[:n, 0], xy[:n, 1], c=colours[:n] if colours else "tab:blue", cmap="tab10", s=12, marker="o")
    ax.scatter(xy[n:, 0], xy[n:, 1], c=colours[n:] if colours else "tab:orange", cmap="tab10", s=18, marker="x")
    if labels is not None and class_names:
        handles = sc.legend_elements()[0]
        ax.legend(handles, list(class_names)[:len(handles)], fontsize=7, title="o image, x caption")
    ax.set(title="t-SNE of validation embeddings", xticks=[], yticks=[])
    return _save(fig, out)


def _save(fig, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing")  # no CJK font here: boxes, not errors
        fig.tight_layout()
        fig.savefig(out, dpi=_DPI)
    plt.close(fig)
    return out


def plot_run(run: Path, model, tokenizer, val, runtime) -> list[Path]:
    """All three PNGs into the run folder. val: the validation PairSet (core/pairs.py)."""
    from ..models.mini import MiniEncoder
    from .shapes import SHAPES
    run = Path(run)
    encoder = MiniEncoder(model, tokenizer, f"mini:{run.name}", runtime)
    paths = [plot_curves(json.loads((run / "log.json").read_text(encoding="utf-8")), run / "curves.png")]
    images = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in val.images]
    texts, t2i = val.eval_texts["en"]
    queries = _SHAPES_QUERIES if val.items is not None else texts[:4]
    paths.append(plot_retrieval_grid(encoder, images, queries, run / "retrieval.png"))
    n = min(_TSNE_POINTS, len(images))
    first = {}
    for j, i in enumerate(t2i):  # one caption per image
        first.setdefault(i, j)
    keep = [i for i in range(n) if i in first]
    labels = val.labels["shape"][keep].tolist() if val.labels else None
    paths.append(plot_tsne(encoder.encode_images([images[i] for i in keep]),
                           encoder.encode_texts([texts[first[i]] for i in keep]), run / "tsne.png",
                           labels, list(SHAPES) if labels else None))
    return paths


def replot(run: Path, runtime) -> list[Path]:
    """Redraw the plots of a finished (or interrupted) run from its files."""
    from ..models.mini import load_checkpoint
    from .pairs import load_pairsets
    run = Path(run)
    if not (run / "best.pt").is_file():
        raise ValueError(f"{run} has no best.pt; is it a run folder written by `python -m core.train`?")
    cfg = json.loads((run / "config.json").read_text(encoding="utf-8"))
    model, tokenizer, _ = load_checkpoint(run / "best.pt")
    sizes = (0, cfg.get("shapes_val", 500), 0)
    val = load_pairsets(cfg["data"], model.config.image_size, cfg["seed"], sizes, splits=("val",))["val"]
    return plot_run(run, model, tokenizer, val, runtime)


def plot_finetune(report: dict, out: Path) -> list[Path]:
    """A fine-tuning report (core/lab/finetune.py) -> recall.png (Recall@K before/after on the
    test split) and curves.png (training loss and validation mean recall per epoch)."""
    _style()
    keys = [k for k in report["before"] if "_R@" in k] + ["mean_recall"]
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(keys)), 4))
    xs = range(len(keys))
    ax.bar([x - 0.2 for x in xs], [report["before"][k] for k in keys], 0.4, label="before")
    ax.bar([x + 0.2 for x in xs], [report["after"][k] for k in keys], 0.4, label="after")
    ax.set_xticks(list(xs), keys, rotation=45, ha="right", fontsize=7)
    ax.set(title=f"Recall@K (%) on held-out test, {report['init']} → fine-tuned ({report['mode']})")
    ax.legend()
    paths = [_save(fig, Path(out) / "recall.png")]
    log = report["log"]
    if log:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        epochs = [r["epoch"] for r in log]
        axes[0].plot(epochs, [r["train_loss"] for r in log], marker="o")
        axes[0].set(title="training loss (symmetric InfoNCE)", xlabel="epoch")
        axes[1].plot(epochs, [r["val_mean_recall"] for r in log], marker="o")
        axes[1].set(title="validation mean recall (%)", xlabel="epoch")
        paths.append(_save(fig, Path(out) / "curves.png"))
    return paths
