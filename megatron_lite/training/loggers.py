"""A metrics.csv logger that continues across a resume (Lightning's CSVLogger deletes the file)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only

from megatron_lite.training.files import atomic_file


class CSVMetricsLogger(Logger):
    """One row per logging call: `step` and the metrics logged at it.

    Lightning logs optimizer step k (0-based) as step k, and the validation after k + 1 steps
    as step k too. On a resume from a checkpoint taken after N steps, rows of steps >= N, which
    the interrupted run logged after that checkpoint, are dropped: the resumed run logs them
    again. Earlier rows stay.

    A kill can come at any moment: a rewrite (new columns) replaces the file whole, and an
    append cut short leaves a last line without its newline, which a resume drops.
    """

    def __init__(self, path: Path, resume_step: int | None) -> None:
        super().__init__()
        self.path = path
        self._rows: list[dict[str, Any]] = []
        if resume_step is not None and path.is_file():
            self._rows = [row for row in _complete_rows(path) if int(row["step"]) < resume_step]
        self._keys = sorted({key for row in self._rows for key in row} - {"step"})
        self._written = 0
        self._rewrite = True

    @property
    def name(self) -> str:
        return "csv"

    @property
    def version(self) -> str:
        return ""

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """The resolved config is saved as config.yaml next to metrics.csv instead."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        row = {key: value.item() if isinstance(value, torch.Tensor) else value
               for key, value in metrics.items()}
        new_keys = set(row) - set(self._keys)
        if new_keys:
            self._keys = sorted(set(self._keys) | new_keys)
            self._rewrite = True  # the header changes
        row["step"] = step
        self._rows.append(row)

    @rank_zero_only
    def save(self) -> None:
        fields = ["step", *self._keys]
        if self._rewrite:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            text = io.StringIO(newline="")
            writer = csv.DictWriter(text, fieldnames=fields)
            writer.writeheader()
            writer.writerows(self._rows)
            with atomic_file(self.path) as file:
                file.write(text.getvalue().encode())
            self._rewrite = False
        elif self._written < len(self._rows):
            with open(self.path, "a", newline="") as file:
                csv.DictWriter(file, fieldnames=fields).writerows(self._rows[self._written:])
        self._written = len(self._rows)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()


def _complete_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a metrics.csv a killed run wrote, without a last line cut short (every
    complete line ends with its newline)."""
    with open(path, newline="") as file:
        text = file.read()
    return list(csv.DictReader(io.StringIO(text[: text.rfind("\n") + 1], newline="")))
