"""ONNX Runtime encoders for the CPU: a backend's two towers exported once per model, run by
ONNX Runtime behind the same `Encoder` interface (`--runtime onnx`, and `auto` on a CPU).

Export folder, in the model cache, keyed by the weights' fingerprint (so new weights are a new
folder, i.e. a re-export) and by EXPORT_VERSION (a change to the exported graphs):

    CLIP_WB_CACHE/onnx/<fingerprint>-v<EXPORT_VERSION>/
        image.onnx       pixels [B, 3, H, W] float32 -> features [B, D] (unnormalised)
        text.onnx        tokens [B, L] int64 -> features [B, D]; L is dynamic, so a batch cut after
                         its last end-of-text token runs at its own length; the EOT gather is in the graph
        image.int8.onnx  dynamic int8 quantisation of image.onnx (made on first `onnx-int8` use)
        text.int8.onnx
        meta.json        written last (the folder is complete when it exists):
                         {"backend", "dim", "logit_scale", "multilingual", ...backend fields}

Every export is checked against torch on inputs of a batch size and length other than the
ones traced, so a graph with a frozen shape is caught at export, not at the first query.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import ModelUnavailableError
from ..messages import Msg
from ..settings import Runtime
from .base import Encoder

__all__ = ["OnnxTowers", "OnnxEncoder", "export_folder", "read_meta", "export_towers", "EXPORT_VERSION",
           "TOWERS"]

EXPORT_VERSION = 2   # 2: projections as Gemm on [B * n, W] rows, shapes read once per tower (625 -> 259 nodes)
TOWERS = ("image", "text")
OPSET = 17
_EXPORT_TOLERANCE = 1e-3   # max abs difference ONNX vs torch on unnormalised features; float rounding is ~1e-6


@dataclass(frozen=True)
class OnnxTowers:
    """What a backend hands over for export (all fp32, on the CPU, eval mode)."""
    image: torch.nn.Module   # pixels [B, 3, H, W] -> features [B, D]
    text: torch.nn.Module    # tokens [B, L] int64 -> features [B, D]
    pixels: Callable[[int], torch.Tensor]          # batch size -> example pixels
    tokens: Callable[[int, int], torch.Tensor]     # (batch size, length) -> example token ids
    meta: dict               # dim, logit_scale, multilingual and what the backend needs to rebuild its
                             # preprocessing and tokenizer without loading the torch weights


def export_folder(cache: Path, fingerprint: str) -> Path:
    return Path(cache) / "onnx" / f"{fingerprint}-v{EXPORT_VERSION}"


def read_meta(folder: Path) -> dict | None:
    """meta.json of a complete export, or None (never exported, or interrupted)."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if all((folder / f"{t}.onnx").is_file() for t in TOWERS) else None


def _atomic(target: Path, write: Callable[[Path], None]) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, target)   # two processes exporting at once write the same bytes; last one wins
    finally:
        tmp.unlink(missing_ok=True)


def export_towers(towers: OnnxTowers, folder: Path) -> dict:
    """Export both towers into `folder`, check them against torch, write meta.json; returns the meta.
    Raises ModelUnavailableError when a graph does not reproduce torch (e.g. a shape frozen at trace
    time); the backend then runs torch and says why."""
    folder.mkdir(parents=True, exist_ok=True)
    specs = {"image": (towers.image, (towers.pixels(2),), "pixels", {0: "batch"}),
             "text": (towers.text, (towers.tokens(2, 8),), "tokens", {0: "batch", 1: "length"})}
    for name, (module, example, input_name, axes) in specs.items():
        def write(tmp, module=module, example=example, input_name=input_name, axes=axes):
            with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
                warnings.simplefilter("ignore")   # TracerWarnings and the legacy exporter's deprecation notice
                torch.onnx.export(module, example, str(tmp), input_names=[input_name], output_names=["features"],
                                  dynamic_axes={input_name: axes, "features": {0: "batch"}},
                                  opset_version=OPSET, dynamo=False)
        try:
            _atomic(folder / f"{name}.onnx", write)
        except (RuntimeError, TypeError, ValueError, AttributeError) as e:
            raise ModelUnavailableError(Msg("{name} 塔无法导出为 ONNX（{kind}: {error}）",
                                            "{name} tower cannot be exported to ONNX ({kind}: {error})",
                                            name=name, kind=type(e).__name__,
                                            error=str(e).splitlines()[0] if str(e) else "")) from None
    _check(towers, folder)
    meta = {**towers.meta, "export_version": EXPORT_VERSION, "torch": torch.__version__}
    _atomic(folder / "meta.json", lambda tmp: tmp.write_text(json.dumps(meta, indent=1), encoding="utf-8"))
    return meta


def _check(towers: OnnxTowers, folder: Path) -> None:
    """Run the exported graphs at a batch size and length other than the traced ones."""
    cases = {"image": (towers.image, towers.pixels(3)), "text": (towers.text, towers.tokens(3, 5))}
    for name, (module, x) in cases.items():
        with torch.no_grad():
            ref = module(x).float().numpy()
        try:
            got = _session(folder / f"{name}.onnx").run(None, {_input(name): x.numpy()})[0]
        except _ort_errors() as e:
            raise ModelUnavailableError(Msg("导出的 {name} 塔无法在 ONNX Runtime 中运行（{error}）",
                                            "the exported {name} tower does not run in ONNX Runtime ({error})",
                                            name=name, error=str(e).splitlines()[0])) from None
        diff = float(np.abs(got - ref).max()) if got.shape == ref.shape else float("inf")
        if diff > _EXPORT_TOLERANCE:
            raise ModelUnavailableError(Msg("导出的 {name} 塔与 torch 的结果相差 {diff:.2g}",
                                            "the exported {name} tower differs from torch by {diff:.2g}",
                                            name=name, diff=diff))


def _ort_errors() -> tuple[type[Exception], ...]:
    """ONNX Runtime's own exception classes (they derive from Exception only)."""
    from onnxruntime.capi import onnxruntime_pybind11_state as state
    return tuple(getattr(state, n) for n in ("Fail", "InvalidArgument", "InvalidGraph", "RuntimeException",
                                              "NoSuchFile", "InvalidProtobuf") if hasattr(state, n))


def _input(tower: str) -> str:
    return "pixels" if tower == "image" else "tokens"


def _session(path: Path):
    """An ONNX Runtime CPU session whose idle worker threads sleep instead of busy-waiting: on a
    2-core machine spinning takes the CPU from the threads decoding the next batch of images and
    from other requests (measured under load: text query 21 ms without spinning, 34-39 ms with)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def quantize(folder: Path, tower: str) -> Path:
    """`<tower>.int8.onnx`: dynamic int8 quantisation (weights int8, activations quantised per
    call) of the fp32 export, made once and kept beside it."""
    target = folder / f"{tower}.int8.onnx"
    if not target.is_file():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        def write(tmp):
            root = logging.getLogger()
            quiet = logging.Filter("onnx-quiet")   # drops the root-logger advice quantize_dynamic prints
            root.addFilter(quiet)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    quantize_dynamic(str(folder / f"{tower}.onnx"), str(tmp), weight_type=QuantType.QInt8)
            finally:
                root.removeFilter(quiet)
        _atomic(target, write)
    return target


class OnnxEncoder(Encoder):
    """A backend's towers run by ONNX Runtime; preprocessing and tokenisation stay the backend's.
    Sessions are opened on first use (a text search never loads the image tower)."""

    def __init__(self, folder: Path, meta: dict, preprocess: Callable, tokens: Callable[[list[str]], torch.Tensor],
                 model_id: str, runtime: Runtime):
        self.folder, self.meta, self.model_id, self.runtime = Path(folder), meta, model_id, runtime
        self._preprocess, self._tokens = preprocess, tokens
        self.dim, self.logit_scale = int(meta["dim"]), float(meta["logit_scale"])
        self.multilingual = bool(meta.get("multilingual", False))
        self.image_size = meta.get("input_resolution")
        self.int8 = runtime.engine == "onnx-int8"
        self._sessions: dict = {}
        self._lock = threading.Lock()

    def session(self, tower: str):
        if tower not in self._sessions:
            with self._lock:
                if tower not in self._sessions:
                    path = quantize(self.folder, tower) if self.int8 else self.folder / f"{tower}.onnx"
                    self._sessions[tower] = _session(path)
        return self._sessions[tower]

    def fp32_twin(self) -> "OnnxEncoder":
        """The same model in fp32 (for the int8 agreement check)."""
        return OnnxEncoder(self.folder, self.meta, self._preprocess, self._tokens, self.model_id,
                           replace(self.runtime, engine="onnx"))

    def preprocess(self, image):
        return self._preprocess(image)

    def _image_features(self, pixels):
        x = np.ascontiguousarray(pixels.numpy(), dtype=np.float32)
        return torch.from_numpy(self.session("image").run(None, {"pixels": x})[0])

    def _text_features(self, texts):
        tokens = np.ascontiguousarray(self._tokens(texts).numpy(), dtype=np.int64)
        return torch.from_numpy(self.session("text").run(None, {"tokens": tokens})[0])
