"""One study's folder on disk (minimal: one run's folder; the study-folder object owns the rest)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunFolder:
    """One run's folder inside a study: its record, its resume checkpoint, its kept best weights."""
    path: Path

    @property
    def record(self) -> Path:
        return self.path / "result.json"

    @property
    def resume(self) -> Path:
        return self.path / "resume"

    def best(self, task: str) -> Path:
        return self.path / "best" / task
