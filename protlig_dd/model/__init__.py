"""protlig_dd.model: the SEDD transformer, rotary embedding, EMA of weights and precision helpers."""

from protlig_dd.model.ema import EMA
from protlig_dd.model.precision import autocast_context, needs_grad_scaler, resolve_precision
from protlig_dd.model.rotary import RotaryEmbedding
from protlig_dd.model.transformer import SEDDTransformer, modulate

__all__ = [
    "EMA",
    "RotaryEmbedding",
    "SEDDTransformer",
    "autocast_context",
    "modulate",
    "needs_grad_scaler",
    "resolve_precision",
]
