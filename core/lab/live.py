"""Training a mini-CLIP while someone watches: one run at a time per app, in a thread, with
the loss per step and the held-out metrics per epoch readable at any moment, and a Stop.

    trainer = LiveTrainer(Path("runs"))
    trainer.start(LiveConfig(epochs=2))       # False when a run is already going
    trainer.snapshot()                        # -> LiveState (steps, epochs, running, best checkpoint)
    trainer.stop()                            # stops after the current step

Each run is a normal `core.train` run folder (runs/live-YYYYmmdd-HHMMSS): log.json, last.pt,
best.pt (after the first epoch), so `python -m core.train --resume runs/live-.../last.pt`
continues a stopped run, and its best.pt is a model the app can switch to.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import WorkbenchError
from ..messages import Msg
from ..models.base import error_message
from ..settings import Runtime
from .train import TrainConfig, train

__all__ = ["LiveConfig", "LiveState", "LiveTrainer"]


@dataclass(frozen=True)
class LiveConfig:
    """The knobs the Learn tab shows; the rest are TrainConfig's defaults."""
    data: str = "shapes"             # "shapes" or "flickr8k:DIR" (a folder on the server)
    # The defaults must visibly learn within ~2 minutes on 2 CPU cores. Measured (benchmarks/RESULTS.md,
    # "Watch a CLIP learn"): at 32 px and lr 2e-3 the colours are learned in the first epoch and mean
    # recall climbs past chance at once; at 48 or 64 px with lr 1e-3 the loss sat on its plateau
    # (ln of the batch) for the whole of a 3-epoch run, ending at chance.
    epochs: int = 4
    batch_size: int = 64
    text_encoder: str = "transformer"  # or "lstm"
    hard_negatives: bool = True
    shapes_train: int = 3072         # 48 steps per epoch at batch 64
    shapes_val: int = 200
    shapes_test: int = 300
    image_size: int = 32             # 4x fewer pixels than the bundled model's 64: more steps in the same time
    lr: float = 2e-3                 # a short run needs the higher peak to leave the loss plateau early
    device: str = "auto"

    def train_config(self, out: Path, runtime: Runtime | None = None) -> TrainConfig:
        """The run's full config; `runtime`: the app's (on ZeroGPU, "auto" trains on the CPU)."""
        return TrainConfig(data=self.data, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                           text_encoder=self.text_encoder, hard_negatives=self.hard_negatives,
                           shapes_train=self.shapes_train, shapes_val=self.shapes_val, shapes_test=self.shapes_test,
                           image_size=self.image_size, device=self._device(runtime), out=str(out), plots=False)

    def _device(self, runtime: Runtime | None) -> str:
        """The app process has no real CUDA outside model calls on ZeroGPU (Runtime.zero_gpu)."""
        return "cpu" if self.device == "auto" and runtime is not None and runtime.zero_gpu else self.device


@dataclass(frozen=True)
class LiveState:
    running: bool
    run: Path | None                                       # the run folder
    steps: list[tuple[int, float]] = field(default_factory=list)   # (global step, training loss)
    epochs: list[dict] = field(default_factory=list)       # core.train log rows (val Recall@K, zero-shot top-1)
    total_steps: int = 0
    stopped: bool = False                                  # ended by stop()
    error: str | None = None                               # why it failed (a Msg when the error carried one)
    best: Path | None = None                               # best.pt once an epoch is done


class _Stop(Exception):
    pass


class LiveTrainer:
    """One training at a time (a classroom's CPU runs one); thread-safe."""

    def __init__(self, runs_dir: Path, runtime: Runtime | None = None):
        """runtime: the app's, whose facts decide where "auto" trains (see LiveConfig.train_config)."""
        self.runs_dir, self.runtime = Path(runs_dir), runtime
        self._lock = threading.Lock()
        self._state = LiveState(False, None)
        self._stop = threading.Event()

    def start(self, config: LiveConfig) -> bool:
        """Start a run in a background thread; False when one is already running."""
        with self._lock:
            if self._state.running:
                return False
            run = self.runs_dir / time.strftime("live-%Y%m%d-%H%M%S")
            n = 1
            while run.exists():
                run, n = run.with_name(f"{run.name.split('~')[0]}~{n}"), n + 1
            steps = config.epochs * max(1, config.shapes_train // config.batch_size) if config.data == "shapes" else 0
            self._state = LiveState(True, run, total_steps=steps)
            self._stop.clear()
        threading.Thread(target=self._run, args=(config.train_config(run, self.runtime),), name="live-train", daemon=True).start()
        return True

    def stop(self) -> bool:
        """Ask the running training to stop after its current step; False when none runs."""
        if not self.snapshot().running:
            return False
        self._stop.set()
        return True

    def snapshot(self) -> LiveState:
        with self._lock:
            return replace(self._state, steps=list(self._state.steps), epochs=list(self._state.epochs))

    def _update(self, **changes) -> None:
        with self._lock:
            self._state = replace(self._state, **changes)

    def _on_step(self, step: int, loss: float) -> None:
        with self._lock:
            self._state.steps.append((step, round(loss, 5)))
        if self._stop.is_set():
            raise _Stop

    def _on_epoch(self, row: dict) -> None:
        with self._lock:
            self._state.epochs.append(row)
        self._update(best=self._state.run / "best.pt")

    def _run(self, cfg: TrainConfig) -> None:
        stopped, error = False, None
        try:
            train(cfg, progress=False, on_epoch=self._on_epoch, on_step=self._on_step)
        except _Stop:
            stopped = True
        except (ValueError, OSError, RuntimeError, WorkbenchError) as e:   # bad data folder, out of memory, ...
            error = Msg("{reason}（错误类型：{kind}）", "{kind}: {reason}", kind=type(e).__name__, reason=error_message(e))
        best = Path(cfg.out) / "best.pt"
        self._update(running=False, stopped=stopped, error=error, best=best if best.is_file() else None)
