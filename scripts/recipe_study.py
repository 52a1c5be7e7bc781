"""Collect the recipe study: held-out bound and shuffled control of each run, against tokens and minutes.

Each row of the study is a training run directory (``metrics.jsonl``) plus the report of
``python -m protlig_dd.evaluate`` on it (``<run>/eval/report.json``: the bound on the 996 random
UniRef50 validation sequences and the shuffled control). A spec file (JSON) lists the rows:

    {"cpu": "AMD EPYC (2 cores, no AMX)",
     "rows": [{"label": "...", "run": "runs/R1", "command": "...", "tokens_per_s": 9800, "note": "..."}]}

(``"report"``: another path of the report.json, relative to ``--root``.)

``tokens_per_s`` is the training throughput of that config measured alone on the named CPU with both
cores (the runs of the study themselves may have shared the machine); wall-clock minutes are
tokens / tokens_per_s. The script prints a markdown table, and writes it with a JSON copy and a plot
(bound against minutes; marker size = shuffled-control z) into ``--out``.

    python scripts/recipe_study.py --spec docs/recipes/study.json --out docs/recipes
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def read_curve(run: Path) -> list[dict[str, float]]:
    """[(step, tokens, val_ppl_bound, stderr)] of the validations in ``run/metrics.jsonl``."""
    tokens_at: dict[int, float] = {}
    curve = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "tokens_seen" in row:
            tokens_at[row["step"]] = row["tokens_seen"]
        if "val_ppl_bound" in row:
            curve.append({"step": row["step"], "bound": row["val_ppl_bound"], "stderr": row["val_ppl_bound_stderr"]})
    for point in curve:
        known = [s for s in tokens_at if s <= point["step"]]
        point["tokens"] = tokens_at[max(known)] if known else 0.0
    return curve


def read_report(path: Path) -> dict[str, Any]:
    """Bound, baselines, shuffled control and sample statistics of an evaluation ``report.json``."""
    report = json.loads(path.read_text())
    validation = report["validation"]
    control = validation["shuffle_control"]
    samples = report.get("samples", {})
    return {
        "step": report["step"],
        "bound": validation["ppl_bound"],
        "bound_stderr": validation["ppl_stderr"],
        "nll": validation["nll_per_residue"],
        "unigram": validation["baselines"]["train_unigram_ppl"],
        "shuffle_diff": control["difference_per_residue"],
        "shuffle_stderr": control["difference_stderr"],
        "shuffle_z": control["z"],
        "sample_composition_kl": samples.get("composition", {}).get("kl_samples_vs_data"),
        "sample_low_complexity": samples.get("complexity", {}).get("samples", {}).get("low_complexity_fraction"),
        "data_low_complexity": samples.get("complexity", {}).get("data", {}).get("low_complexity_fraction"),
    }


def collect(spec: dict[str, Any], root: Path) -> list[dict[str, Any]]:
    """One record per spec row: its curve in tokens and minutes, and its final report."""
    rows = []
    for entry in spec["rows"]:
        run = root / entry["run"]
        curve = read_curve(run)
        for point in curve:
            point["minutes"] = point["tokens"] / entry["tokens_per_s"] / 60.0
        report = root / entry["report"] if "report" in entry else run / "eval" / "report.json"
        record = {**entry, "curve": curve, "report": read_report(report)}
        record["tokens"] = curve[-1]["tokens"] if curve else 0.0
        record["minutes"] = record["tokens"] / entry["tokens_per_s"] / 60.0
        rows.append(record)
    return rows


def markdown_table(rows: list[dict[str, Any]], cpu: str) -> str:
    """The study table: one line per run."""
    lines = [
        f"CPU: {cpu}. Bound: perplexity bound on the 996 random UniRef50 validation sequences "
        "(`evaluate`, EMA weights). Shuffled control: bound per residue of the same sequences shuffled "
        "minus real (nats), its standard error and z.",
        "",
        "| run | tokens | minutes (2 cores) | bound | unigram | shuffled - real (nats) | z | note |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        rep = row["report"]
        lines.append(
            f"| {row['label']} | {row['tokens'] / 1e6:.1f}M | {row['minutes']:.1f} | "
            f"{rep['bound']:.3f} ± {rep['bound_stderr']:.3f} | {rep['unigram']:.2f} | "
            f"{rep['shuffle_diff']:+.4f} ± {rep['shuffle_stderr']:.4f} | {rep['shuffle_z']:.1f} | "
            f"{row.get('note', '')} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Bound against minutes (left) and shuffled-control difference per run (right)."""
    figure = Figure(figsize=(11, 4.2))
    left, right = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    for row in rows:
        curve = row["curve"]
        left.plot([p["minutes"] for p in curve], [p["bound"] for p in curve], marker="o", label=row["label"])
    unigram = rows[0]["report"]["unigram"] if rows else math.nan
    left.axhline(unigram, color="grey", linestyle="--", linewidth=1, label="training unigram")
    left.set_xlabel("minutes of training (2 cores, measured throughput)")
    left.set_ylabel("perplexity bound, 996 random UniRef50")
    left.legend(fontsize=6)
    labels = [row["label"] for row in rows]
    diffs = [row["report"]["shuffle_diff"] for row in rows]
    errors = [2 * row["report"]["shuffle_stderr"] for row in rows]
    right.barh(range(len(rows)), diffs, xerr=errors, color="tab:blue")
    right.set_yticks(range(len(rows)), labels, fontsize=6)
    right.axvline(0.0, color="grey", linewidth=1)
    right.set_xlabel("shuffled - real, nats per residue (± 2 s.e.)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure).print_png(str(path))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, required=True, help="JSON list of rows (see the module docstring)")
    parser.add_argument("--root", type=Path, default=Path("."), help="run paths in the spec are relative to this")
    parser.add_argument("--out", type=Path, required=True, help="folder for study.md, study_results.json, study.png")
    args = parser.parse_args(argv)
    spec = json.loads(args.spec.read_text())
    rows = collect(spec, args.root)
    table = markdown_table(rows, spec["cpu"])
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "study.md").write_text(table + "\n")
    (args.out / "study_results.json").write_text(json.dumps(rows, indent=1) + "\n")
    plot(rows, args.out / "study.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
