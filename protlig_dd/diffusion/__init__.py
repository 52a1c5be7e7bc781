"""protlig_dd.diffusion: the SEDD math (noise schedules, graphs, loss, likelihood bound, samplers)."""

from protlig_dd.diffusion.graphs import Absorbing, Graph, ScoreFn, Uniform, build_graph
from protlig_dd.diffusion.likelihood import BoundSummary, SequenceBounds, likelihood_bound, summarize_bounds
from protlig_dd.diffusion.loss import LossOutput, sample_times, score_entropy_loss
from protlig_dd.diffusion.noise import Cosine, Geometric, LogLinear, NoiseSchedule, build_noise
from protlig_dd.diffusion.samplers import sample
from protlig_dd.diffusion.templates import (
    parse_template,
    prefix_suffix_template,
    stack_templates,
    template_batch,
    templates_from_lengths,
    templates_from_strings,
)

__all__ = [
    "Absorbing",
    "BoundSummary",
    "Cosine",
    "Geometric",
    "Graph",
    "LogLinear",
    "LossOutput",
    "NoiseSchedule",
    "ScoreFn",
    "SequenceBounds",
    "Uniform",
    "build_graph",
    "build_noise",
    "likelihood_bound",
    "parse_template",
    "prefix_suffix_template",
    "sample",
    "sample_times",
    "score_entropy_loss",
    "stack_templates",
    "summarize_bounds",
    "template_batch",
    "templates_from_lengths",
    "templates_from_strings",
]
