"""Build the pieces of a run from its config: model, graph, noise, optimizer."""

from __future__ import annotations

import torch

from protlig_dd.config import Config, OptimConfig
from protlig_dd.data.alphabet import Alphabet
from protlig_dd.diffusion.graphs import build_graph
from protlig_dd.diffusion.loss import TimeSampling
from protlig_dd.diffusion.noise import build_noise
from protlig_dd.model.transformer import SEDDTransformer


def build_model(cfg: Config, alphabet: Alphabet, num_labels: int = 0) -> SEDDTransformer:
    """The SEDD transformer sized by ``cfg.model`` for ``alphabet`` and ``cfg.graph``, conditioned on
    ``num_labels`` labels (the label vocabulary's size; 0 = an unconditional model)."""
    absorbing = cfg.graph.type == "absorbing"
    return SEDDTransformer(cfg.model, num_residues=alphabet.num_residues, absorbing=absorbing, num_labels=num_labels)


def build_diffusion(cfg: Config, alphabet: Alphabet):
    """(graph, noise) of the forward process."""
    return build_graph(cfg.graph, alphabet.num_residues), build_noise(cfg.noise)


def build_time_sampling(cfg: Config) -> TimeSampling:
    """How training draws each row's noise level (``training.time_sampling`` / ``time_importance_power``)."""
    return TimeSampling(
        stratified=cfg.training.time_sampling == "stratified", power=cfg.training.time_importance_power
    )


def _fused_kind(cfg: OptimConfig, device: torch.device) -> dict[str, bool]:
    # fused AdamW runs on CUDA/MPS (and CPU in recent torch); foreach is the portable fast path.
    if not cfg.fused:
        return {"foreach": False}
    major, minor = (int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
    if device.type in ("cuda", "mps") or (device.type == "cpu" and (major, minor) >= (2, 4)):
        return {"fused": True}
    return {"foreach": True}


def build_optimizer(cfg: OptimConfig, model: torch.nn.Module, device: torch.device) -> torch.optim.AdamW:
    """AdamW; weight decay only on matrices (not biases, norms or embeddings)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if param.dim() >= 2 and "embed" not in name else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(
        groups,
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        eps=cfg.adam_eps,
        **_fused_kind(cfg, device),
    )
