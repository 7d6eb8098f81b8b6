"""The Learn tab (the app's fifth): train a mini-CLIP live, see the embedding space, the
similarity matrix, zero-shot vs a linear probe, and how to fine-tune on your own pairs.

Layout and thin callbacks only; the work is in core (`wb.learn`, core/lab/live.py).

Switching models ("use this model"): the server's Holder (core/holder.py), shared by every tab
and the JSON HTTP API, switches to `wb.with_model(best.pt, RUN/library)`: a new Workbench over
the trained checkpoint with its own library (seeded with the samples), so every surface's next
call uses the new model, and features of two models never mix. The old Workbench is flushed.
"""
from __future__ import annotations

import base64
import html
import io
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from core import LiveConfig, LiveTrainer
from core.messages import localize

from .callbacks import Callbacks, who
from .errors import fail, user_errors
from .guard import blocked_paths, served_paths
from .i18n import t
from .language import Say, say, session_langs

__all__ = ["LearnCallbacks", "learn_tab"]

MAX_PICK = 8               # images and texts in a similarity matrix (core.lab.learn.MAX_PICK)
POLL_S = 1.0               # how often a watcher's plots refresh while a training runs
PICK_CHOICES = 200         # newest library images offered in the similarity picker
_THUMB = 72                # pixels of the images in the similarity matrix
_METRICS = ("val_mean_recall", "val_en_t2i_R@1", "val_en_shape_top1", "val_en_colour_top1")
_PRIVATE = {"api_visibility": "private"}


class LearnCallbacks:
    def __init__(self, cb: Callbacks, trainer: LiveTrainer, demo: gr.Blocks | None = None):
        self.cb, self.trainer, self.demo = cb, trainer, demo

    @property
    def wb(self):
        return self.cb.wb          # read from the server's Holder at every call ("use this model" switches it)

    def _admit(self, request: gr.Request | None, action: str) -> None:
        """The teacher's actions of this tab, checked by the workbench's policy (core/policy.py)."""
        self.wb.policy.admit(who(self.cb.access, request), action)

    # ------------------------------------------------------------ train live

    def train_start(self, data: str, epochs: float, batch: float, text_encoder: str, hard: bool,
                    images: float, lang: str, request: gr.Request = None):
        """Start a mini-CLIP training (teacher only, one at a time), then stream its plots."""
        with user_errors(lang):
            self._admit(request, "train")
        data = (data or "shapes").strip()
        if data != "shapes" and not data.startswith("flickr8k:"):
            raise fail("learn.bad_data", lang)
        config = LiveConfig(data=data, epochs=int(epochs), batch_size=int(batch), text_encoder=text_encoder,
                            hard_negatives=bool(hard), shapes_train=int(images))
        if not self.wb.train(self.trainer, config, caller=who(self.cb.access, request)):   # counted as "train"
            raise fail("learn.busy", lang)
        yield from self.train_watch(lang, request)

    def train_watch(self, lang: str, request: gr.Request = None):
        """-> (loss plot, metrics plot, status) every POLL_S until the training ends; each status in the
        language the session shows at that poll (a switch while it runs is followed)."""
        while True:
            state = self.trainer.snapshot()
            lang = session_langs.get(request, lang)
            yield _loss_frame(state), _metrics_frame(state), Say(partial(_train_status, _status_of(state)), lang)
            if not state.running:
                return
            time.sleep(POLL_S)

    def train_stop(self, lang: str, request: gr.Request = None) -> Say:
        with user_errors(lang):
            self._admit(request, "stop_training")
        return say("learn.stopping" if self.trainer.stop() else "learn.idle", lang)

    def use_model(self, lang: str, request: gr.Request = None) -> Say:
        """Switch the app to the last run's best.pt, with that run's own library (teacher only)."""
        state = self.trainer.snapshot()
        if state.running or state.best is None:
            raise fail("learn.no_model", lang)
        with user_errors(lang):   # the teacher only; every surface switches, or none (core/holder.py)
            new = self.cb.holder.switch(who(self.cb.access, request), str(state.best), state.run / "library",
                                        ready=lambda wb: self._serve(wb.root))
        return say("learn.switched", lang, model=new.encoder.model_id, path=new.root, n=len(new))

    def _serve(self, root: Path) -> None:
        """Let the running server serve the new library's images and thumbnails (and nothing else)."""
        if self.demo is not None:
            self.demo.allowed_paths = [*self.demo.allowed_paths, *served_paths(root)]
            self.demo.blocked_paths = [*self.demo.blocked_paths, *blocked_paths(root)]

    # ------------------------------------------------------------ embedding map

    def embedding_map(self, method: str, labels: str, query: str, lang: str, request: gr.Request = None):
        """-> (scatter data, points state, note markdown); no image waiting for review on a student's map"""
        with user_errors(lang):
            emap = self.wb.learn.embedding_map(method, labels or "", query or "", lang,
                                               caller=who(self.cb.access, request))
        rows = [{"x": p.x, "y": p.y, "label": p.label or t("learn.map_image", lang), "name": p.name, "id": p.id,
                 "image": _file_url(self.wb.thumbnail(p.entry))} for p in emap.points]
        if emap.query is not None:
            rows.append({"x": emap.query[0], "y": emap.query[1], "label": f"🔎 {query.strip()}", "name": query.strip(),
                         "id": "", "image": ""})
        frame = pd.DataFrame(rows, columns=["x", "y", "label", "name", "id", "image"])
        return frame, rows, Say(partial(_map_note, len(emap.points), emap.total, emap.method, tuple(emap.notes)), lang)

    @staticmethod
    def map_pick(points: list[dict], evt: gr.SelectData):
        """A brushed x-range of the map -> gallery of those images (at most 12)."""
        lo, hi = (sorted(evt.index) + [None, None])[:2] if isinstance(evt.index, (list, tuple)) else (None, None)
        inside = [p for p in points or [] if p["id"] and lo is not None and lo <= p["x"] <= hi]
        return [(p["image"].removeprefix("gradio_api/file="), f"{p['name']} · {p['id']}") for p in inside[:12]]

    # ------------------------------------------------------------ similarity matrix

    def pick_choices(self, lang: str, request: gr.Request = None):
        """The newest library images the caller may see, for the similarity picker."""
        entries = self.wb.page(1, PICK_CHOICES, caller=who(self.cb.access, request)).entries
        return gr.update(choices=[(f"{e.name} · {e.id}", e.id) for e in entries])

    def similarity(self, picked: list[str] | None, files: list[str] | None, texts: str, lang: str,
                   request: gr.Request = None) -> Say:
        """-> HTML heat map: images along the top, texts down the side, cosine similarity in each cell."""
        images = list(picked or []) + list(files or [])
        lines = [x for x in (texts or "").splitlines() if x.strip()]
        if not images or not lines:
            raise fail("learn.sim_empty", lang)
        if len(images) > MAX_PICK or len(lines) > MAX_PICK:   # core says so too; here before any encoding
            raise fail("learn.sim_many", lang, n=MAX_PICK)
        with user_errors(lang):
            entries = [self.wb.entry(i, who(self.cb.access, request)) for i in picked or []]   # none a student may not see
            sim = self.wb.learn.similarity(images, lines)
            thumbs = [self._thumb(self.wb.thumbnail(e)) for e in entries]
            thumbs += [self._thumb(f) for f in files or []]
        shown = [f"⚠️ {x}" if self.wb.unknown_words(x) else x for x in sim.texts]   # core's note says why
        return Say(partial(_heatmap, sim.matrix, thumbs, shown, sim.notes), lang)

    def _thumb(self, image: str | Path) -> str:
        """A small inline JPEG of an image (data: URL: nothing more to serve)."""
        picture = self.wb.image(image).convert("RGB")
        picture.thumbnail((_THUMB, _THUMB))
        buf = io.BytesIO()
        picture.save(buf, "JPEG", quality=85)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()

    # ------------------------------------------------------------ zero-shot vs linear probe

    def probe(self, classes: str, assignments: str, lang: str) -> Say:
        with user_errors(lang):
            r = self.wb.learn.probe(classes or "", assignments or "", lang=lang)
        return Say(partial(_probe_table, r), lang)


# ---------------------------------------------------------------- formatting

def _file_url(path: Path) -> str:
    """A served file's URL relative to the page (vega-tooltip shows a tooltip field named "image")."""
    return f"gradio_api/file={path}"


def _loss_frame(state) -> pd.DataFrame:
    """(step, loss) with numeric columns even while empty: the plot takes an empty frame's object
    columns for categories and keeps that axis, so a falling loss drew as unordered labels."""
    steps, losses = zip(*state.steps) if state.steps else ((), ())
    return pd.DataFrame({"step": pd.Series(steps, dtype="int64"), "loss": pd.Series(losses, dtype="float64")})


def _metrics_frame(state) -> pd.DataFrame:
    """(epoch, value, metric): numeric epoch and value (see _loss_frame), one line per metric."""
    rows = [(int(r["epoch"]), float(r[k]), k.removeprefix("val_")) for r in state.epochs for k in _METRICS if k in r]
    epochs, values, names = zip(*rows) if rows else ((), (), ())
    return pd.DataFrame({"epoch": pd.Series(epochs, dtype="int64"), "value": pd.Series(values, dtype="float64"),
                         "metric": pd.Series(names, dtype="string")})


def _status_of(state) -> SimpleNamespace:
    """What the training status says, without the run's loss history (a renderer keeps this per session)."""
    last = state.epochs[-1] if state.epochs else None
    return SimpleNamespace(run=state.run, running=state.running, stopped=state.stopped, error=state.error,
                           step=state.steps[-1][0] if state.steps else 0, total_steps=state.total_steps,
                           epochs=len(state.epochs), best=state.best,
                           last={k: last[k] for k in ("val_mean_recall", "val_en_shape_top1", "val_en_colour_top1")
                                 if k in last}
                           if last is not None else None)


def _train_status(state, lang: str) -> str:
    """`state`: a LiveState or its `_status_of`."""
    if not isinstance(state, SimpleNamespace):
        state = _status_of(state)
    if state.run is None:
        return t("learn.idle", lang)
    head = t("learn.running" if state.running else "learn.stopped" if state.stopped else
             "learn.failed" if state.error else "learn.done", lang, run=state.run, error=localize(state.error or "", lang))
    parts = [head, t("learn.progress", lang, step=state.step, total=state.total_steps or "?", epochs=state.epochs)]
    if state.last is not None:
        last = state.last
        parts.append(t("learn.last_epoch", lang, recall=last.get("val_mean_recall", 0),
                       top1=last.get("val_en_shape_top1", float("nan")),
                       colour=last.get("val_en_colour_top1", float("nan"))))
    if state.best is not None and not state.running:
        parts.append(t("learn.can_use", lang, best=state.best))
    return "\n\n".join(parts)


def _probe_table(r, lang: str) -> str:
    lines = [t("learn.probe_head", lang, probe=r.probe_accuracy, zs=r.zeroshot_accuracy, train=r.train, test=r.test),
             "", t("learn.probe_cols", lang), "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {html.escape(c)} | {a} | {b} | {p:.0f}% | {z:.0f}% |" for c, a, b, p, z in r.per_class]
    notes = [t("learn.probe_few", lang, label=n.split(":")[1], n=n.split(":")[2]) if n.startswith("few:")
             else t("learn.probe_scan", lang, n=n.split(":")[1]) if n.startswith("scan:") else f"ℹ️ {localize(n, lang)}"
             for n in r.notes]
    return "\n".join(lines + ([""] + notes if notes else []) + ["", t("learn.probe_why", lang)])


def _map_note(shown: int, total: int, method: str, map_notes: tuple, lang: str) -> str:
    """The map's note from its counts and notes (a renderer keeps these, never the map's points)."""
    notes = [t("learn.map_count", lang, shown=shown, total=total, method=method.upper())]
    for n in map_notes:
        if n == "empty":
            notes = [t("learn.map_empty", lang)]
        elif n.startswith("sample:"):
            notes.append(t("learn.map_sampled", lang, n=n.split(":")[1], total=n.split(":")[2]))
        elif n == "knn":
            notes.append(t("learn.map_knn", lang))
        else:
            notes.append(f"ℹ️ {localize(n, lang)}")
    return "\n\n".join(notes)


def _heatmap(matrix, thumbs: list[str], texts: list[str], notes: list[str], lang: str) -> str:
    """CLIP notebook's figure as an HTML table (the browser draws Chinese whatever fonts the server has)."""
    lo, hi = float(matrix.min()), float(matrix.max())
    span = (hi - lo) or 1.0
    head = "".join(f'<th><img src="{src}" alt="image {i + 1}" style="width:{_THUMB}px"></th>' for i, src in enumerate(thumbs))
    rows = []
    for j, text in enumerate(texts):
        cells = []
        for i in range(len(thumbs)):
            v = float(matrix[i, j])
            heat = (v - lo) / span                  # 0 (coolest) .. 1 (hottest) within this matrix
            colour = f"rgba(220, 38, 38, {0.1 + 0.8 * heat:.2f})"
            cells.append(f'<td style="background:{colour};text-align:center;padding:6px">{v:.3f}</td>')
        rows.append(f'<tr><th style="text-align:right;padding:6px">{html.escape(text)}</th>{"".join(cells)}</tr>')
    caption = t("learn.sim_caption", lang)
    extra = "".join(f"<p>ℹ️ {html.escape(localize(n, lang))}</p>" for n in notes)
    return (f'<div id="sim-matrix"><p>{caption}</p><table style="border-collapse:collapse">'
            f'<tr><th></th>{head}</tr>{"".join(rows)}</table>{extra}</div>')


# ---------------------------------------------------------------- layout

def learn_tab(cb: Callbacks, loc, lang_state: gr.State, demo: gr.Blocks | None = None,
              trainer: LiveTrainer | None = None) -> dict:
    """Lay out the Learn tab and wire its events; returns the event that refreshes its pickers."""
    lc = LearnCallbacks(cb, trainer or LiveTrainer(Path(cb.wb.root).resolve().parent / "runs", cb.wb.runtime), demo)
    loc(gr.Markdown, value="learn.intro")
    _train_section(lc, loc, lang_state)
    _map_section(lc, loc, lang_state)
    picker = _similarity_section(lc, loc, lang_state)
    _probe_section(lc, loc, lang_state)
    with loc(gr.Accordion, label="learn.ft_title", open=False):
        loc(gr.Markdown, value="learn.ft_body")
    return {"fn": lc.pick_choices, "inputs": [lang_state], "outputs": [picker], **_PRIVATE,
            "show_progress": "hidden", "concurrency_limit": None}


def _train_section(lc: LearnCallbacks, loc, lang_state) -> None:
    with loc(gr.Accordion, label="learn.train_title", open=True):
        loc(gr.Markdown, value="learn.train_help")
        with gr.Row():
            data = loc(gr.Textbox, value="shapes", label="learn.data", info="learn.data_info", scale=2)
            epochs = loc(gr.Slider, minimum=1, maximum=30, step=1, value=LiveConfig.epochs, label="learn.epochs",
                         elem_id="learn-epochs")
            images = loc(gr.Slider, minimum=64, maximum=5000, step=64, value=LiveConfig.shapes_train,
                         label="learn.images", elem_id="learn-images")
        with gr.Row():
            batch = loc(gr.Dropdown, choices=[32, 64, 128], value=64, label="learn.batch")
            tower = loc(gr.Radio, choices={"transformer": "learn.transformer", "lstm": "learn.lstm"},
                        value="transformer", label="learn.text_tower")
            hard = loc(gr.Checkbox, value=True, label="learn.hard")
        with gr.Row():
            start = loc(gr.Button, value="learn.start", variant="primary", elem_id="learn-start")
            stop = loc(gr.Button, value="learn.stop", variant="stop", elem_id="learn-stop")
            watch = loc(gr.Button, value="learn.watch", elem_id="learn-watch")
            use = loc(gr.Button, value="learn.use", elem_id="learn-use")
        with gr.Row():
            loss = loc(gr.LinePlot, x="step", y="loss", label="learn.loss_plot", x_title="learn.ax_step",
                       y_title="learn.ax_loss", elem_id="learn-loss", height=260)
            metrics = loc(gr.LinePlot, x="epoch", y="value", color="metric", label="learn.metric_plot",
                          x_title="learn.ax_epoch", y_title="learn.ax_value", color_title="learn.ax_metric",
                          elem_id="learn-metrics", height=260)
        status = loc.message(elem_id="learn-status")
    live = {"concurrency_id": "learn_watch", "concurrency_limit": 8, "show_progress": "hidden"}
    start.click(**loc.wire(lc.train_start, [data, epochs, batch, tower, hard, images, lang_state],
                           [loss, metrics, status], api_name="train_start", **live))
    watch.click(**loc.wire(lc.train_watch, [lang_state], [loss, metrics, status], api_name="train_watch", **live))
    stop.click(**loc.wire(lc.train_stop, [lang_state], [status], api_name="train_stop", concurrency_limit=None))
    use.click(**loc.wire(lc.use_model, [lang_state], [status], api_name="use_model", concurrency_id="ingest"))


def _map_section(lc: LearnCallbacks, loc, lang_state) -> None:
    with loc(gr.Accordion, label="learn.map_title", open=False):
        loc(gr.Markdown, value="learn.map_help")
        with gr.Row():
            method = loc(gr.Radio, choices={"pca": "learn.pca", "tsne": "learn.tsne"}, value="pca", label="learn.method")
            labels = loc(gr.Textbox, label="learn.map_labels", placeholder="learn.map_labels_ph", scale=2)
            query = loc(gr.Textbox, label="learn.map_query", placeholder="learn.map_query_ph", scale=2)
        draw = loc(gr.Button, value="learn.map_draw", variant="primary", elem_id="learn-map-draw")
        note = loc.message(elem_id="learn-map-note")
        plot = loc(gr.ScatterPlot, x="x", y="y", color="label", tooltip=["image", "name", "id", "label"],
                   label="learn.map_plot", x_title="learn.ax_x", y_title="learn.ax_y", color_title="learn.ax_label",
                   elem_id="learn-map", height=480)
        picked = loc(gr.Gallery, label="learn.map_picked", columns=6, height=200)
        points = gr.State([])
    draw.click(**loc.wire(lc.embedding_map, [method, labels, query, lang_state], [plot, points, note],
                          api_name="embedding_map", concurrency_id="model"))
    plot.select(lc.map_pick, [points], [picked], **_PRIVATE)


def _similarity_section(lc: LearnCallbacks, loc, lang_state) -> gr.Dropdown:
    with loc(gr.Accordion, label="learn.sim_title", open=False):
        loc(gr.Markdown, value="learn.sim_help")
        with gr.Row():
            picker = loc(gr.Dropdown, choices=[], multiselect=True, max_choices=MAX_PICK, allow_custom_value=True,
                         label="learn.sim_pick", info="learn.sim_pick_info",
                         elem_id="learn-sim-pick")
            files = loc(gr.File, file_count="multiple", file_types=["image"], label="learn.sim_files")
        texts = loc(gr.Textbox, lines=4, label="learn.sim_texts", placeholder="learn.sim_texts_ph",
                    elem_id="learn-sim-texts")
        go = loc(gr.Button, value="learn.sim_go", variant="primary", elem_id="learn-sim-go")
        out = loc.message(gr.HTML, elem_id="learn-sim-out")
    go.click(**loc.wire(lc.similarity, [picker, files, texts, lang_state], [out], api_name="similarity_matrix",
                        concurrency_id="model"))
    return picker


def _probe_section(lc: LearnCallbacks, loc, lang_state) -> None:
    with loc(gr.Accordion, label="learn.probe_title", open=False):
        loc(gr.Markdown, value="learn.probe_help")
        classes = loc(gr.Textbox, label="learn.probe_classes", placeholder="learn.probe_classes_ph",
                      elem_id="learn-probe-classes")
        assign = loc(gr.Textbox, lines=3, label="learn.probe_assign", placeholder="learn.probe_assign_ph")
        go = loc(gr.Button, value="learn.probe_go", variant="primary", elem_id="learn-probe-go")
        out = loc.message(elem_id="learn-probe-out")
    go.click(**loc.wire(lc.probe, [classes, assign, lang_state], [out], api_name="linear_probe",
                        concurrency_id="model"))
