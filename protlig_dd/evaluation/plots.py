"""PNG plots of the evaluation report, drawn with matplotlib's Agg canvas.

Figures are built with ``matplotlib.figure.Figure`` and saved through ``FigureCanvasAgg`` directly,
so no pyplot state or global backend is touched (safe on headless machines and inside notebooks).
Each function writes one file and returns its path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_DPI = 110


def _save(figure: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    FigureCanvasAgg(figure).print_png(str(path))
    return path


def plot_perplexity(
    path: Path, model_ppl: float, model_stderr: float, baselines: dict[str, float], title: str
) -> Path:
    """Bar chart: the model's perplexity bound (with its standard error) beside baseline perplexities."""
    labels = ["model (bound)", *baselines]
    values = [model_ppl, *baselines.values()]
    error = model_stderr if math.isfinite(model_stderr) else 0.0
    figure = Figure(figsize=(6, 3.6), dpi=_DPI)
    axes = figure.add_subplot()
    bars = axes.bar(labels, values, color=["tab:blue"] + ["tab:gray"] * len(baselines))
    axes.errorbar([0], [model_ppl], yerr=[error], color="black", capsize=4)
    for k, (bar, value) in enumerate(zip(bars, values, strict=True)):
        top = value + (error if k == 0 else 0.0)
        axes.annotate(f"{value:.2f}", (bar.get_x() + bar.get_width() / 2, top), ha="center", va="bottom")
    axes.set_ylabel("perplexity per residue (lower is better)")
    axes.set_title(title, fontsize=9)
    axes.set_ylim(0, max(values[0] + error, *values) * 1.2)
    return _save(figure, path)


def plot_composition(path: Path, letters: str, series: dict[str, np.ndarray], title: str) -> Path:
    """Grouped bars: amino-acid frequencies of each named series (samples, data, references)."""
    figure = Figure(figsize=(10, 3.8), dpi=_DPI)
    axes = figure.add_subplot()
    x = np.arange(len(letters))
    width = 0.8 / max(len(series), 1)
    for k, (name, freq) in enumerate(series.items()):
        axes.bar(x + (k - (len(series) - 1) / 2) * width, freq, width, label=name)
    axes.set_xticks(x, list(letters))
    axes.set_ylabel("frequency")
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=8)
    return _save(figure, path)


def plot_lengths(path: Path, series: dict[str, Sequence[int]], title: str) -> Path:
    """Overlaid length histograms (density) of each named set of lengths."""
    figure = Figure(figsize=(6, 3.6), dpi=_DPI)
    axes = figure.add_subplot()
    longest = max(max(v) for v in series.values() if len(v))
    bins = np.linspace(0, longest + 1, min(40, longest + 1) + 1)
    for name, lengths in series.items():
        axes.hist(lengths, bins=bins, density=True, alpha=0.5, label=f"{name} (n={len(lengths)})")
    axes.set_xlabel("length (residues)")
    axes.set_ylabel("density")
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=8)
    return _save(figure, path)


def plot_identity(path: Path, series: dict[str, np.ndarray], title: str) -> Path:
    """Histograms of identity values in [0, 1] (pairwise within a set, or highest to training)."""
    figure = Figure(figsize=(6, 3.6), dpi=_DPI)
    axes = figure.add_subplot()
    bins = np.linspace(0, 1, 41)
    for name, values in series.items():
        axes.hist(values, bins=bins, density=True, alpha=0.5, label=f"{name} (n={len(values)})")
    axes.set_xlabel("identity (alignment, over the shorter sequence)")
    axes.set_ylabel("density")
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=8)
    return _save(figure, path)


def plot_training_curves(
    path: Path,
    loss: tuple[Sequence[int], Sequence[float]],
    validation: tuple[Sequence[int], Sequence[float], Sequence[float]],
    baselines: dict[str, float],
) -> Path:
    """Two panels: training loss vs step; validation perplexity bound (+- stderr) vs step with baselines."""
    figure = Figure(figsize=(10, 3.6), dpi=_DPI)
    left, right = figure.subplots(1, 2)
    left.plot(loss[0], loss[1], lw=1)
    left.set_xlabel("optimizer step")
    left.set_ylabel("training loss (score entropy per token)")
    steps, ppl, stderr = (np.asarray(v, dtype=np.float64) for v in validation)
    if len(steps):
        right.errorbar(
            steps, ppl, yerr=np.nan_to_num(stderr), marker="o", capsize=3, label="validation bound"
        )
    for name, value in baselines.items():
        right.axhline(value, ls="--", lw=1, color="gray")
        right.annotate(name, (0.01, value), xycoords=("axes fraction", "data"), va="bottom", fontsize=8)
    right.set_xlabel("optimizer step")
    right.set_ylabel("perplexity bound per residue")
    right.legend(fontsize=8)
    return _save(figure, path)
