"""report.md: the evaluation report's headline numbers, tables and plots, for people to read.

The numbers come from the report dictionary built by ``evaluation.report`` (the same as report.json).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from protlig_dd.diffusion.likelihood import BOUND_NOTE
from protlig_dd.evaluation.label_signatures import signature_table_markdown


def _fmt(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _comparison_rows(samples: dict[str, Any]) -> list[tuple[str, Any, Any, int]]:
    """(label, samples value, held-out data value, digits) rows of the report.md table."""
    comp, div, nov, cpx = (samples[k] for k in ("composition", "diversity", "novelty", "complexity"))

    def both(section: dict[str, Any], key: str) -> tuple[Any, Any]:
        return tuple(section.get(name, {}).get(key, "n/a") for name in ("samples", "data"))

    return [
        ("KL composition vs held-out data (nats)", comp["kl_samples_vs_data"], 0.0, 4),
        (
            "KL composition vs training unigram",
            comp["kl_samples_vs_train_unigram"],
            comp["kl_data_vs_train_unigram"],
            4,
        ),
        (
            "KL composition vs EvoDiff UniRef50",
            comp["kl_samples_vs_evodiff_uniref50"],
            comp["kl_data_vs_evodiff_uniref50"],
            4,
        ),
        ("mean length", *both(samples["length"], "mean"), 1),
        ("diversity: mean pairwise identity", *both(div, "mean_pairwise_identity"), 3),
        ("novelty: mean highest identity to training (approx.)", *both(nov, "mean"), 3),
        ("fraction with identity >= 0.9 to training", *both(nov, "fraction_at_least_0.9"), 3),
        ("low-complexity fraction (SEG-like, approx.)", *both(cpx, "low_complexity_fraction"), 3),
        ("mean longest homopolymer", *both(cpx, "max_homopolymer_mean"), 1),
    ]


def _shuffle_control_markdown(control: dict[str, Any]) -> str:
    """The shuffled-control paragraph of report.md."""
    if not control["computed"]:
        return f"Shuffled control: not computed ({control['reason']})."
    used = control["z"] > 3.0
    verdict = (
        "the model prefers the real residue order, so it uses more than amino-acid composition"
        if used
        else "no significant difference: the model has not (measurably) learned residue order"
    )
    return (
        f"Shuffled control (the same sequences with their residues shuffled, same noise draws): "
        f"{_fmt(control['real_nll_per_residue'], 4)} nats/residue real vs "
        f"{_fmt(control['shuffled_nll_per_residue'], 4)} shuffled, difference "
        f"{control['difference_per_residue']:+.4f} +- {_fmt(control['difference_stderr'], 4)} "
        f"(z = {_fmt(control['z'], 1)}): {verdict}."
    )


def _conditional_markdown(section: dict[str, Any]) -> list[str]:
    """The label-conditioning section: label control, then one signature table per label."""
    c = section["label_control"]
    lines = [
        "## Label conditioning",
        "",
        f"Data: {section['data']}: {c['num_sequences']} sequences with labels the model knows, "
        f"{c['num_residues']} residues, {c['samples_per_sequence']} t draws each, the same draws under each "
        "labelling.",
        "",
        "| labels | nats per residue | difference to own labels | z |",
        "| --- | --- | --- | --- |",
        f"| own | {_fmt(c['own_nll_per_residue'], 4)} | | |",
        f"| other sequences' | {_fmt(c['other_nll_per_residue'], 4)} | {c['other_minus_own']:+.4f} +- "
        f"{_fmt(c['other_minus_own_stderr'], 4)} | {_fmt(c['other_minus_own_z'], 1)} |",
        f"| no label | {_fmt(c['no_label_nll_per_residue'], 4)} | {c['none_minus_own']:+.4f} +- "
        f"{_fmt(c['none_minus_own_stderr'], 4)} | {_fmt(c['none_minus_own_z'], 1)} |",
        "",
    ]
    for signature in section["signatures"]:
        lines += [
            f"### Signatures of {signature['label_name']} ({signature['num_members']} held-out members, "
            f"{signature['steps']} sampling steps)",
            "",
            signature_table_markdown(signature["table"]),
            "",
        ]
    return lines


def write_markdown(report: dict[str, Any], path: Path) -> None:
    """A short human-readable report.md: the headline numbers, the plots, the definitions."""
    val, smp = report["validation"], report["samples"]
    base = val["baselines"]
    lines = [
        "# Evaluation report",
        "",
        f"Checkpoint `{report['checkpoint']}` (step {report['step']}, EMA weights: {report['uses_ema']}).",
        "",
        "## Likelihood bound on held-out sequences",
        "",
        f"Data: {val['data']}: {val['num_sequences']} sequences, {val['num_residues']} residues "
        f"({val['num_windowed']} scored in windows of {val['max_length']}), {val['samples_per_sequence']} "
        "t draws each.",
        "",
        "| | perplexity per residue |",
        "| --- | --- |",
        f"| model (upper bound) | {_fmt(val['ppl_bound'])} +- {_fmt(val['ppl_stderr'])} |",
        f"| uniform over 20 amino acids | {_fmt(base['uniform_20_ppl'])} |",
        f"| training unigram | {_fmt(base['train_unigram_ppl'])} |",
        "",
        f"The bound is an {BOUND_NOTE}.",
        "",
        _shuffle_control_markdown(val["shuffle_control"]),
        "",
        "![perplexity](perplexity.png)",
        "",
        f"## Generated sequences ({smp['num_sequences']}, from {report['samples_source']})",
        "",
        "| metric | samples | held-out data |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {label} | {_fmt(a, d)} | {_fmt(b, d)} |" for label, a, b, d in _comparison_rows(smp)]
    lines += [
        "",
        f"Novelty reference: {smp['novelty']['reference']}.",
        "",
        "![composition](composition.png)",
        "",
        "![lengths](lengths.png)",
        "",
        "![identity](identity.png)",
        "",
        "## Training",
        "",
    ]
    training = report["training"]
    if training["available"]:
        lines += [
            f"From `{training['metrics_file']}`: final loss {_fmt(training['final_loss'])}, final validation "
            f"perplexity bound {_fmt(training['final_validation_ppl_bound'])}.",
            "",
            "![training curves](training_curves.png)",
        ]
    else:
        lines.append(f"Not available: {training['reason']}.")
    if "conditional" in report:
        lines += ["", *_conditional_markdown(report["conditional"])]
    lines += ["", "## Definitions", ""]
    lines += [f"- **{name}**: {text}" for name, text in report["definitions"].items()]
    lines += ["", "No structure metric is reported: no structure predictor was run.", ""]
    path.write_text("\n".join(lines))
