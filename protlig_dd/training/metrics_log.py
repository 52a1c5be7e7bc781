"""Metric sinks of a training run: metrics.jsonl, Weights & Biases, and rank-0 logging."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from protlig_dd.config import LoggingConfig

logger = logging.getLogger(__name__)


def _clean(value: Any) -> Any:
    # JSON has no NaN/inf: write them as strings so a bad step stays visible and parseable.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def resolve_wandb_mode(requested: str) -> str:
    """auto: online when an API key is configured, offline otherwise."""
    if requested != "auto":
        return requested
    if (
        os.environ.get("WANDB_API_KEY")
        or (Path.home() / ".netrc").is_file()
        and "api.wandb.ai" in (Path.home() / ".netrc").read_text(errors="ignore")
    ):
        return "online"
    return "offline"


class MetricsLogger:
    """Appends metric rows to ``metrics.jsonl`` and mirrors them to wandb when enabled.

    Only rank 0 creates one. wandb is optional: if it is not installed and the mode is not
    ``disabled`` a warning says so once and the run continues with metrics.jsonl alone.
    """

    def __init__(self, work_dir: Path, cfg: LoggingConfig, config_dict: dict[str, Any], mode: str) -> None:
        self.path = Path(work_dir) / "metrics.jsonl"
        self._handle = open(self.path, "a", buffering=1)
        self._wandb_run = None
        mode = resolve_wandb_mode(mode)
        if mode != "disabled":
            try:
                import wandb
            except ImportError:
                logger.warning("wandb is not installed; logging to %s only", self.path)
            else:
                self._wandb_run = wandb.init(
                    project=cfg.wandb_project,
                    name=cfg.run_name or Path(work_dir).resolve().name,
                    dir=str(work_dir),
                    config=config_dict,
                    mode=mode,
                    resume="allow",
                    id=self._run_id(work_dir),
                )
                logger.info("wandb mode: %s", mode)

    @staticmethod
    def _run_id(work_dir: Path) -> str:
        # One wandb run per work_dir, so a resumed run continues the same wandb curve.
        id_file = Path(work_dir) / "wandb" / "run_id"
        if id_file.is_file():
            return id_file.read_text().strip()
        import uuid

        run_id = uuid.uuid4().hex[:12]
        id_file.parent.mkdir(parents=True, exist_ok=True)
        id_file.write_text(run_id)
        return run_id

    def log(self, row: dict[str, Any]) -> None:
        self._handle.write(json.dumps({k: _clean(v) for k, v in row.items()}) + "\n")
        if self._wandb_run is not None:
            step = row.get("step")
            self._wandb_run.log(
                {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))}, step=step
            )

    def close(self) -> None:
        self._handle.close()
        if self._wandb_run is not None:
            self._wandb_run.finish()
            self._wandb_run = None
