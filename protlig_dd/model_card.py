"""The model card (README.md) of an exported model, generated from its config.json.

Everything on the card comes from config.json (protlig_dd.model_folder.export_config): the
architecture and parameterisation, the training data with its provenance and license, the steps
and tokens seen, the model it was fine-tuned from, the held-out bound beside its baselines and the
shuffled control, the sampling settings, how to load it, and what it was not evaluated on. The YAML
front matter is the Hub's model metadata.
"""

from __future__ import annotations

import math
from typing import Any

from protlig_dd.diffusion.likelihood import BOUND_NOTE

# data.embedded_train -> (what it is, its license); embedded/PROVENANCE.md in the package has the detail.
EMBEDDED_TRAINING_DATA = {
    "swissprot50": (
        "the package's embedded training set: 35,809 UniProtKB/Swiss-Prot cluster representatives at 50% "
        "identity (Swiss-Prot with Gene Ontology annotations, January 2014; 12.0M residues, 30-1,024 residues "
        "each), none a homologue (MMseqs2, E <= 1e-3) of a validation sequence",
        "cc-by-4.0",
    ),
    "uniref50_17taxa": (
        "the package's older embedded sample: 5,001 UniRef50 representatives (release 2021_04, ESM-2 training "
        "split) from 17 taxa",
        "cc-by-4.0",
    ),
}


def default_license(config: dict[str, Any]) -> str:
    """The Hub license tag: the training data's for the embedded sets, else unknown (say it: --license)."""
    data = config["run_config"]["data"]
    if not data["source"]:
        return EMBEDDED_TRAINING_DATA[data["embedded_train"]][1]
    return "unknown"


def _training_data(config: dict[str, Any], license_tag: str) -> list[str]:
    data = config["run_config"]["data"]
    summary = config.get("data_summary", {})
    if not data["source"]:
        description, _ = EMBEDDED_TRAINING_DATA[data["embedded_train"]]
        lines = [
            f"Trained on {description}. Source: UniProt (CC BY 4.0; cite UniProt); the provenance of every file, "
            "with checksums, is in `protlig_dd/data/embedded/PROVENANCE.md` of the protlig_dd package."
        ]
    else:
        sources = ", ".join(f"`{s}`" for s in summary.get("sources", {}).get("train", [data["source"]]))
        lines = [
            f"Trained on {sources} (`data.source`). Its provenance and license were not recorded by the run: "
            f"the license tag of this card is `{license_tag}`; state both here before publishing."
        ]
    if summary:
        lines.append(
            f"{summary.get('num_train', 0):,} training sequences, {summary.get('train_residues', 0):,} residues; "
            f"validation split: {summary.get('split', 'unknown')} ({summary.get('num_validation', 0):,} sequences)."
        )
    return lines


def _origin(config: dict[str, Any]) -> list[str]:
    init = config.get("initialized_from")
    init_name = config["run_config"]["training"].get("init_from", "")
    if not init and not init_name:
        return ["Trained from a random initialisation."]
    init = init or {"model": init_name}
    revision = f" (revision `{init['revision']}`)" if init.get("revision") else ""
    step = f", its step {init['step']:,}" if isinstance(init.get("step"), int) else ""
    weights = f", {init['weights']} weights" if init.get("weights") else ""
    return [
        f"**Fine-tuned from `{init['model']}`**{revision}{step}{weights} (`--init-from`): a new optimizer, "
        "schedule and step counter; the EMA started from those weights. The steps and tokens below count "
        "the fine-tuning only."
    ]


def _fmt(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and math.isfinite(value) else str(value)


def _evaluation(config: dict[str, Any]) -> list[str]:
    lines = []
    metrics = config.get("metrics") or {}
    if "val_ppl_bound" in metrics:
        lines.append(
            f"- Validation during training (step {config['step']:,}, {metrics.get('val_sequences', '?')} sequences): "
            f"perplexity bound {_fmt(metrics['val_ppl_bound'])} +- {_fmt(metrics.get('val_ppl_bound_stderr'))} "
            f"(training unigram: {_fmt(metrics.get('unigram_ppl'), 2)}; uniform over 20 amino acids: 20)."
        )
    evaluation = config.get("evaluation")
    if evaluation:
        baselines = evaluation["baselines"]
        lines.append(
            f"- Held-out set at export ({evaluation['data']}; {evaluation['num_sequences']:,} sequences, "
            f"{evaluation['num_residues']:,} residues, {evaluation['samples_per_sequence']} noise draws each): "
            f"**perplexity bound {_fmt(evaluation['ppl_bound'])} +- {_fmt(evaluation['ppl_stderr'])}** "
            f"({_fmt(evaluation['nll_per_residue'], 4)} nats per residue) against the baselines uniform-20 = "
            f"{_fmt(baselines['uniform_20_ppl'], 2)} and training unigram = {_fmt(baselines['train_unigram_ppl'], 2)}."
        )
        control = evaluation["shuffle_control"]
        if control.get("computed"):
            lines.append(
                f"- Shuffled control (the same held-out sequences with their residues permuted, same noise draws): "
                f"real {_fmt(control['real_nll_per_residue'], 4)} vs shuffled "
                f"{_fmt(control['shuffled_nll_per_residue'], 4)} nats per residue, difference "
                f"{control['difference_per_residue']:+.4f} +- {_fmt(control['difference_stderr'], 4)} "
                f"(z = {_fmt(control['z'], 1)}; positive: the model uses residue order, not only composition)."
            )
    if not lines:
        lines.append("- Not evaluated at export (`--no-evaluation`) and no validation ran during training.")
    lines.append(f"- The bound is an upper bound on -log p(x | length) ({BOUND_NOTE}).")
    return lines


def _how_to_load(name: str) -> list[str]:
    return [
        "```bash",
        "pip install -e .   # in a clone of the protlig_dd repository: puts protlig-dd on PATH",
        f"protlig-dd sample --checkpoint {name} --num 8 --out samples.fasta",
        f"protlig-dd score --checkpoint {name} --fasta my_proteins.fasta --out scores.csv",
        f"protlig-dd train --init-from {name} --datafile my_family.fasta --work_dir runs/my_family "
        "--set training.max_steps=1000   # fine-tune",
        "```",
        "",
        "```python",
        "from protlig_dd.inference import load_model",
        "",
        f'loaded = load_model("{name}")  # EMA weights; device="auto"',
        "print(loaded.sample(num=4, seed=0).sequences)",
        "```",
    ]


def _labels(config: dict[str, Any]) -> list[str]:
    """The conditioning section of a label-conditioned model (none for an unconditional one)."""
    labels = config.get("data_summary", {}).get("labels")
    if not labels:
        return []
    settings = config["run_config"].get("labels", {})
    names = labels.get("names") or {}
    top = ", ".join(f"{t} ({names[t]})" if t in names else t for t in labels["terms"][:8])
    return [
        "## Labels",
        "",
        f"Conditioned on {len(labels['terms']):,} labels from {labels.get('source') or settings.get('source')} "
        f"(the most frequent: {top}). Trained with label dropout p = {settings.get('p_uncond')}, so it is also an "
        "unconditional model; sample with `--label TERM [--guidance W]` (classifier-free guidance) and score "
        "with `--label TERM` or `--labels-from SOURCE`. The full vocabulary is `data_summary.labels` in config.json.",
        "",
    ]


def model_card(config: dict[str, Any], *, name: str, title: str, license_tag: str) -> str:
    """The README.md text for an export with ``config`` (config.json), titled ``title``, loaded as ``name``."""
    model, run = config["model"], config["run_config"]
    sampling, training, optim = run["sampling"], run["training"], run["optim"]
    histogram = config.get("data_summary", {}).get("length_histogram", {})
    lengths = histogram.get("lengths", [])
    length_note = f"{min(lengths)}-{max(lengths)} residues in training" if lengths else "no histogram recorded"
    lines = [
        "---",
        f"license: {license_tag}",
        "library_name: protlig_dd",
        "tags: [protein, protein-language-model, discrete-diffusion, sedd, biology]",
        "---",
        "",
        f"# {title}",
        "",
        f"A SEDD discrete-diffusion protein language model (Lou, Meng & Ermon, ICML 2024) trained with "
        f"protlig_dd {config['protlig_dd_version']}: {config.get('num_parameters', 0):,} "
        f"parameters, {model['num_blocks']} blocks of width {model['hidden_size']} ({model['num_heads']} heads), "
        f"{config['graph']['type']} graph, {config['noise']['type']} noise, rows of up to "
        f"{model['max_length']} residues. Parameterisation: {config['parameterisation']}. "
        f"Weights: {'EMA' if config['weights'] == 'ema' else 'trained (not the EMA)'}.",
        "",
        "## Training data",
        "",
        *_training_data(config, license_tag),
        "",
        "## Training",
        "",
        *_origin(config),
        "",
        f"{config['step']:,} optimizer steps, {config.get('tokens_seen', 0):,} training residues seen; AdamW lr "
        f"{optim['lr']:g} ({optim['schedule']}, {optim['warmup_steps']} warm-up steps), EMA decay "
        f"{training['ema_decay']:g}, precision {training['precision']}, seed {training['seed']}. The full resolved "
        "config is `run_config` in config.json.",
        "",
        "## Evaluation",
        "",
        *_evaluation(config),
        "",
        "## Sampling",
        "",
        f"Defaults: {sampling['steps']} reverse steps, {sampling['predictor']} predictor, final denoising "
        f"{'on' if sampling['denoise'] else 'off'}; lengths drawn from the training length histogram "
        f"({length_note}, capped at {model['max_length']}) unless given.",
        "",
        *_labels(config),
        "## How to load",
        "",
        *_how_to_load(name),
        "",
        "## Limits",
        "",
        f"- Generates at most {model['max_length']} residues; longer sequences are scored in windows of that "
        "length (context across a cut is ignored).",
        "- Evaluated only by the likelihood bound above and the shuffled control. Not evaluated: structure "
        "(no pLDDT or other structure predictor was run), function, fitness or variant-effect prediction, "
        "or any downstream task.",
        "- The held-out bound measures generalisation to the held-out set named above only; it says nothing "
        "about protein families far from the training data.",
        "",
    ]
    return "\n".join(lines)
