"""An optional classifier head over CLIP image embeddings, loaded from a file the user supplies.

    head = load_head("nsfw_b32.pth", encoder)     # SafetyError when it does not fit this encoder
    head.probability(vectors)                     # [N] in [0, 1]: 1 = unsafe

The shape is LAION's CLIP-based NSFW detector as ported to PyTorch (the Keras originals exist for
ViT-B/32, 512-d, and ViT-L/14, 768-d): an optional normalisation (`norm.mean`, `norm.variance`),
then `linear_1` ... `linear_n` with ReLU between them and a sigmoid on the single output:

    x = (x - norm.mean) / sqrt(norm.variance)
    x = relu(linear_1(x)); ...; p = sigmoid(linear_n(x))   # linear_n has one output

The file is a state dict saved with `torch.save` (read with `weights_only=True`) or a
`.safetensors` file; a dict {"state_dict": ..., "model_id": ...} is read too, and its model id,
when given, must be the encoder's. Nothing is ever downloaded: the weights are the user's to
fetch (see the README), and the tests build one with torch.
"""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import SafetyError
from ..messages import Msg

__all__ = ["Head", "load_head", "HEAD_THRESHOLD"]

HEAD_THRESHOLD = 0.5   # probability from which the head flags an image (LAION's detector: 1 = NSFW)
_LINEAR = re.compile(r"^linear_(\d+)\.(weight|bias)$")


class Head(nn.Module):
    """norm -> linear_1 -> ReLU -> ... -> linear_n -> sigmoid, as LAION's detector."""

    def __init__(self, sizes: list[int], normalise: bool):
        super().__init__()
        self.dim = sizes[0]
        if normalise:
            self.register_buffer("norm_mean", torch.zeros(sizes[0]))
            self.register_buffer("norm_variance", torch.ones(sizes[0]))
        self.normalise = normalise
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalise:
            x = (x - self.norm_mean) / self.norm_variance.sqrt()
        for i, linear in enumerate(self.linears):
            x = linear(x)
            if i < len(self.linears) - 1:
                x = torch.relu(x)
        return torch.sigmoid(x[:, 0])

    @torch.inference_mode()
    def probability(self, vectors: torch.Tensor) -> torch.Tensor:
        """vectors [N, D] (L2-normalised CLIP image embeddings) -> [N] probabilities of "unsafe"."""
        return self(vectors.float())


def _read(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        state = load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu",
                                                                                        weights_only=True)
    except FileNotFoundError:
        raise SafetyError(Msg("找不到分类头文件 {path}", "Classifier head not found: {path}", path=str(path))) from None
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError, SafetensorError) as e:
        raise SafetyError(Msg("无法读取分类头 {path}：{why}（应为 torch.save 保存的 state dict 或 .safetensors 文件）",
                              "Cannot read the classifier head {path}: {why} (a state dict saved with torch.save, "
                              "or a .safetensors file, is expected)", path=str(path), why=str(e)[:200])) from None
    if not isinstance(state, dict):
        raise SafetyError(Msg("{path} 中不是 state dict", "{path} holds no state dict", path=str(path)))
    return state


def _layers(state: dict, path: Path) -> list[int]:
    """The sizes [D, h1, ..., 1] of the linear chain in `state`; SafetyError when it is not one."""
    numbers = sorted({int(m.group(1)) for key in state if (m := _LINEAR.match(key))})
    shapes = [tuple(state.get(f"linear_{n}.weight", torch.empty(0)).shape) for n in numbers]
    chained = numbers == list(range(1, len(numbers) + 1)) and all(len(s) == 2 for s in shapes)
    chained = chained and all(a[0] == b[1] for a, b in zip(shapes, shapes[1:]))
    if not numbers or not chained or shapes[-1][0] != 1:
        raise SafetyError(Msg("{path} 不是 LAION 式的分类头（应有 linear_1 … linear_n，首尾相接，最后一层输出 1 个值）",
                              "{path} is not a LAION-style classifier head (expected linear_1 ... linear_n, chained, "
                              "the last with one output)", path=path.name))
    return [shapes[0][1]] + [s[0] for s in shapes]


def load_head(path: str | os.PathLike, encoder) -> Head:
    """The classifier head in `path`, checked against `encoder` (its dimension, and its model id when
    the file records one). SafetyError with the reason otherwise."""
    path = Path(path)
    state = _read(path)
    model_id = state.get("model_id") if isinstance(state.get("model_id"), str) else None
    state = state.get("state_dict", state)
    sizes = _layers(state, path)
    if sizes[0] != encoder.dim:
        raise SafetyError(Msg("分类头 {file} 读取 {want} 维的嵌入，而模型 {model} 给出 {dim} 维：请使用为这个模型训练的分类头"
                              "（LAION 的检测器：ViT-B/32 为 512 维，ViT-L/14 为 768 维）",
                              "The classifier head {file} reads {want}-d embeddings but the model {model} gives {dim}-d: "
                              "use a head trained for this model (LAION's detectors: 512-d for ViT-B/32, 768-d for ViT-L/14)",
                              file=path.name, want=sizes[0], model=encoder.model_id, dim=encoder.dim))
    if model_id and model_id != encoder.model_id:
        raise SafetyError(Msg("分类头 {file} 是为模型 {want} 训练的，当前模型是 {model}",
                              "The classifier head {file} was trained for the model {want}; this one is {model}",
                              file=path.name, want=model_id, model=encoder.model_id))
    normalise = "norm.mean" in state and "norm.variance" in state
    head = Head(sizes, normalise)
    weights = {k.replace("norm.", "norm_"): v for k, v in state.items() if k.startswith("norm.")} if normalise else {}
    try:
        for i in range(len(sizes) - 1):
            weights[f"linears.{i}.weight"] = state[f"linear_{i + 1}.weight"]
            weights[f"linears.{i}.bias"] = state[f"linear_{i + 1}.bias"]
        head.load_state_dict({k: v.float() for k, v in weights.items()})
    except (RuntimeError, KeyError) as e:
        raise SafetyError(Msg("{path} 的权重无法装入分类头：{why}", "The weights in {path} do not fit a head: {why}",
                              path=path.name, why=str(e)[:200])) from None
    return head.eval()
