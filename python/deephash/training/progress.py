"""Training progress that reads well on a terminal and in a log.

On a terminal the training loop shows a tqdm bar updated every step. When the stream is not a terminal
(CI, ``make demo > log 2>&1``), carriage-return updates would leave thousands of lines in the log, so
:class:`EpochLines` prints one line per finished epoch instead::

    HAGCN chebyshev (network) 64b: epoch 3/20, loss 0.123457, 39 steps, 12.3 s
    HAGCN chebyshev 64b: pass 1/2, energy kept 0.0584, 52.1 s          (a fit in passes)

Both objects have the same three methods, called by the training loop: ``step(epoch, loss)`` after each
optimiser step, ``end_epoch(epoch, mean_loss, note="")`` after each epoch (epochs count from 1; ``note``:
more to say on the epoch's line, such as the trained HAGCN's filter), ``close()``.
"""
from __future__ import annotations

import sys
import time


class EpochLines:
    """One line per epoch on ``stream`` (no carriage returns)."""

    def __init__(self, desc: str, epochs: int, steps: int, start_epoch: int = 0, stream=None, unit: str = "epoch",
                 value: str = "loss"):
        self.desc, self.epochs, self.steps = desc, int(epochs), int(steps)
        self.unit, self.value = unit, value
        self.stream = stream if stream is not None else sys.stderr
        self._t0 = time.perf_counter()
        if start_epoch:
            self._write(f"{desc}: resuming after {unit} {start_epoch}/{self.epochs}")

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def step(self, epoch: int, loss: float) -> None:
        pass

    def end_epoch(self, epoch: int, mean_loss: float, note: str = "") -> None:
        now = time.perf_counter()
        steps = f"{self.steps} steps, " if self.unit == "epoch" else ""
        note = f", {note}" if note else ""
        self._write(f"{self.desc}: {self.unit} {epoch}/{self.epochs}, {self.value} {mean_loss:.6g}, {steps}"
                    f"{now - self._t0:.1f} s{note}")
        self._t0 = now

    def close(self) -> None:
        pass


class StepBar:
    """The tqdm bar: one tick per step, the epoch and the step's loss beside it."""

    def __init__(self, desc: str, epochs: int, steps: int, start_epoch: int = 0, stream=None, unit: str = "epoch",
                 value: str = "loss"):
        from tqdm import tqdm

        self.unit, self.value = unit, value
        self.bar = tqdm(total=epochs * steps, initial=start_epoch * steps, desc=desc,
                        unit="step" if unit == "epoch" else unit, dynamic_ncols=True, file=stream)

    def step(self, epoch: int, loss: float) -> None:
        self.bar.update(1)
        self.bar.set_postfix({self.unit: epoch, self.value: f"{loss:.4f}"})

    def end_epoch(self, epoch: int, mean_loss: float, note: str = "") -> None:
        if note:
            self.bar.write(f"{self.bar.desc}: {self.unit} {epoch}, {note}")

    def close(self) -> None:
        self.bar.close()


def is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


def training_progress(desc: str, epochs: int, steps: int, start_epoch: int = 0, stream=None, unit: str = "epoch",
                      value: str = "loss"):
    """A :class:`StepBar` when ``stream`` (default ``sys.stderr``) is a terminal, else :class:`EpochLines`.
    ``unit`` and ``value`` name what is counted and shown (a fit in passes: ``"pass"``, ``"energy kept"``)."""
    stream = stream if stream is not None else sys.stderr
    kind = StepBar if is_terminal(stream) else EpochLines
    return kind(desc, epochs, steps, start_epoch, stream, unit, value)
