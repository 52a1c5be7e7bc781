"""The SEDD network: a diffusion transformer (DDiT) that maps noisy tokens and sigma_bar to log-scores.

Architecture (Lou et al. 2024, after DiT): token embedding -> blocks of [adaLN-modulated
LayerNorm -> rotary self-attention -> gated residual, adaLN-modulated LayerNorm -> GELU MLP ->
gated residual] -> adaLN final layer -> linear to the diffusion states. The conditioning is the
total noise sigma_bar of each row: sinusoidal features -> MLP -> SiLU, turned into per-block
shift / scale / gate vectors (adaLN-Zero: the modulation linears start at zero, so every block
starts as the identity, and the output linear starts at zero, so the initial score is uniform).

One sigma per row: all sequences packed into a row share one noise level, which keeps the
modulation (B, 1, D) and cheap; the sampler/loss choose t per row accordingly. A model with
labels (``num_labels`` > 0, model/conditioning.py) adds each segment's label vector to that
conditioning, so packed sequences keep their own labels: the modulation is then per position.

Output: log-scores s_hat (B, L, N+1) for the absorbing graph (the last column is MASK) or
(B, L, N) for the uniform graph, in float32. For absorbing, ``scale_by_sigma`` applies
s_hat = f - log(expm1(sigma_bar)) - log N. The entry of the current state x_t is set to 0, and
pad positions (segment 0) are all zeros.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from protlig_dd.config import ModelConfig
from protlig_dd.diffusion.graphs import score_from_clean_log_probs
from protlig_dd.model.conditioning import LabelEmbedder, per_token
from protlig_dd.model.fast_ops import dropout
from protlig_dd.model.local_mixing import LocalMixing, neighbour_masks
from protlig_dd.model.rotary import RotaryAngles, RotaryEmbedding
from protlig_dd.numerics import log_expm1

# Width of the sinusoidal features of sigma_bar fed to the conditioning MLP (DiT/SEDD use 256).
SIGMA_FREQUENCY_DIM = 256
# Longest period of those features; sigma_bar lives in about [1e-4, 20].
SIGMA_MAX_PERIOD = 10000.0


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation x * (1 + scale) + shift, with x (B, L, D) and shift/scale (B, 1, D) (one
    conditioning vector per row) or (B, L, D) (per position: packed rows with their own labels).

    Shapes are checked, never broadcast into shape: a (B, 1, 1, D) shift would silently turn
    (B, L, D) into (B, B, L, D) (SEED_LESSONS item 1).
    """
    if x.dim() != 3:
        raise ValueError(f"modulate expects x of shape (B, L, D), got {tuple(x.shape)}")
    allowed = ((x.shape[0], 1, x.shape[2]), tuple(x.shape))
    if tuple(shift.shape) not in allowed or tuple(scale.shape) != tuple(shift.shape):
        raise ValueError(
            f"modulate expects shift/scale of shape {allowed[0]} or {allowed[1]}, "
            f"got {tuple(shift.shape)} and {tuple(scale.shape)}"
        )
    return torch.addcmul(shift, x, 1 + scale)  # one fused pass over (B, L, D)


def sigma_features(sigma_bar: torch.Tensor, dim: int, max_period: float = SIGMA_MAX_PERIOD) -> torch.Tensor:
    """Sinusoidal features (B, dim) of a (B,) noise level, in float32 (cos half then sin half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=sigma_bar.device) / half)
    args = sigma_bar.float()[:, None] * freqs[None, :]  # (B, half)
    features = torch.cat((torch.cos(args), torch.sin(args)), dim=-1)
    if dim % 2:
        features = torch.cat((features, torch.zeros_like(features[:, :1])), dim=-1)
    return features


class LayerNormFP32(nn.Module):
    """LayerNorm without bias, computed in float32 whatever the autocast dtype (SEDD's choice).

    Returns float32, so the residual stream and the modulation stay in float32 under autocast.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), (self.dim,), self.weight.float())


class SigmaEmbedder(nn.Module):
    """sigma_bar (B,) -> conditioning vector (B, cond_dim): sinusoid -> Linear -> SiLU -> Linear -> SiLU."""

    def __init__(self, cond_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(SIGMA_FREQUENCY_DIM, cond_dim),
            nn.SiLU(),
            nn.Linear(cond_dim, cond_dim),
        )

    def forward(self, sigma_bar: torch.Tensor) -> torch.Tensor:
        return F.silu(self.mlp(sigma_features(sigma_bar, SIGMA_FREQUENCY_DIM)))


class DDiTBlock(nn.Module):
    """One transformer block with adaLN-Zero modulation of attention and MLP."""

    def __init__(self, cfg: ModelConfig, rotary: RotaryEmbedding) -> None:
        super().__init__()
        dim = cfg.hidden_size
        self.num_heads = cfg.num_heads
        self.head_dim = dim // cfg.num_heads
        self.dropout = cfg.dropout
        self.rotary = rotary  # shared by all blocks; holds no parameters
        self.norm1 = LayerNormFP32(dim)
        self.attn_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_out = nn.Linear(dim, dim, bias=False)
        self.norm2 = LayerNormFP32(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, cfg.mlp_ratio * dim),
            nn.GELU(approximate="tanh" if cfg.gelu == "tanh" else "none"),
            nn.Linear(cfg.mlp_ratio * dim, dim),
        )
        self.local = LocalMixing(dim, cfg.local_mixing_kernel) if cfg.local_mixing_kernel else None
        # shift/scale/gate for attention then MLP; zero-initialised (adaLN-Zero).
        self.adaLN_modulation = nn.Linear(cfg.cond_dim, 6 * dim)
        nn.init.zeros_(self.adaLN_modulation.weight)
        nn.init.zeros_(self.adaLN_modulation.bias)

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        angles: RotaryAngles,
        attn_mask: torch.Tensor | None,
        local_masks: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, L, D) float32 residual stream, cond (B, S + 1, C) per segment (S + 1 = 1: per row),
        attn_mask (B, 1, L, L) bool or None, local_masks from ``neighbour_masks`` when the block has
        local mixing, segment_ids (B, L) or None to place per-segment conditioning."""
        batch, length, dim = x.shape
        # (B, S + 1, 6D) -> six (B, 1, D) or (B, L, D), checked again inside modulate.
        mods = per_token(self.adaLN_modulation(cond), segment_ids).chunk(6, dim=-1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods

        h = modulate(self.norm1(x), shift_msa, scale_msa)  # (B, L, D)
        qkv = self.attn_qkv(h).view(batch, length, 3, self.num_heads, self.head_dim)
        if angles.fused:
            q, k = self.rotary(*qkv[:, :, :2].unbind(dim=2), angles)  # each (B, L, H, Dh)
        else:
            # q and k rotated together: one set of elementwise ops on the (B, L, 2, H, Dh) view.
            q, k = self.rotary.rotate(qkv[:, :, :2], angles).unbind(dim=2)
        v = qkv[:, :, 2]
        # SDPA wants (B, H, L, Dh); the (B, 1, L, L) mask broadcasts over heads without a copy.
        attn = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=attn_mask
        )
        attn = attn.transpose(1, 2).reshape(batch, length, dim)  # (B, L, D)
        # Gated residual x + gate * y as one addcmul; it stays float32 (y may be bf16 under autocast).
        x = torch.addcmul(x, gate_msa, dropout(self.attn_out(attn), self.dropout, self.training))
        if self.local is not None:
            x = x + self.local(h, local_masks)  # neighbours of the same normalised input as attention

        h = modulate(self.norm2(x), shift_mlp, scale_mlp)
        return torch.addcmul(x, gate_mlp, dropout(self.mlp(h), self.dropout, self.training))


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm then a zero-initialised linear to the output states."""

    def __init__(self, dim: int, cond_dim: int, out_dim: int) -> None:
        super().__init__()
        self.norm = LayerNormFP32(dim)
        self.linear = nn.Linear(dim, out_dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.adaLN_modulation = nn.Linear(cond_dim, 2 * dim)
        nn.init.zeros_(self.adaLN_modulation.weight)
        nn.init.zeros_(self.adaLN_modulation.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, segment_ids: torch.Tensor | None) -> torch.Tensor:
        shift, scale = per_token(self.adaLN_modulation(cond), segment_ids).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))  # (B, L, out_dim)


class SEDDTransformer(nn.Module):
    """The SEDD score network over N residues (+ MASK for absorbing); inputs may also hold PAD.

    ``forward`` returns float32 log-scores; see the module docstring for the output convention.
    Weights stay float32: lower precision comes from autocast (see ``precision.py``), while the
    residual stream, LayerNorms and the score transform stay float32.
    """

    def __init__(self, cfg: ModelConfig, num_residues: int, absorbing: bool, num_labels: int = 0) -> None:
        super().__init__()
        if num_residues < 2:
            raise ValueError(f"num_residues must be >= 2, got {num_residues}")
        self.cfg = cfg
        self.num_residues = num_residues
        self.absorbing = absorbing
        self.pad_id = num_residues + 1  # Alphabet layout: residues, MASK = N, PAD = N + 1
        self.vocab_size = num_residues + 2
        self.out_dim = num_residues + 1 if absorbing else num_residues
        self.scale_by_sigma = absorbing
        self.time_conditioning = cfg.time_conditioning
        if not cfg.time_conditioning and not absorbing:
            raise ValueError("model.time_conditioning: false needs the absorbing graph")
        # Time-agnostic: the network predicts the clean residue (N logits), the score follows from it.
        network_out = self.out_dim if cfg.time_conditioning else num_residues

        self.embedding = nn.Embedding(self.vocab_size, cfg.hidden_size)
        # SEDD initialises the embedding like a linear layer (kaiming uniform), not N(0, 1).
        nn.init.kaiming_uniform_(self.embedding.weight, a=math.sqrt(5))
        # Without time conditioning (and labels) the adaLN input is a zero vector, so each modulation
        # is its learned bias: a static, zero-initialised shift/scale/gate (the blocks still start
        # as the identity). Label conditioning adds a vector per segment to this input.
        self.sigma_embedder = SigmaEmbedder(cfg.cond_dim) if cfg.time_conditioning else None
        self.num_labels = num_labels
        self.label_embedder = LabelEmbedder(num_labels, cfg.cond_dim) if num_labels else None
        self.rotary = RotaryEmbedding(
            cfg.hidden_size // cfg.num_heads, base=cfg.rotary_base, use_fused_kernel=cfg.fused_kernels
        )
        self.blocks = nn.ModuleList([DDiTBlock(cfg, self.rotary) for _ in range(cfg.num_blocks)])
        self.final = FinalLayer(cfg.hidden_size, cfg.cond_dim, network_out)

    def num_parameters(self) -> int:
        """Number of parameters (all of them, embedding included)."""
        return sum(p.numel() for p in self.parameters())

    def _per_token_matmul_parameters(self) -> int:
        """Weights multiplied once per token: attention, MLP and output linears (not embedding, not adaLN)."""
        total = sum(p.numel() for p in self.final.linear.parameters())
        for block in self.blocks:
            for module in (block.attn_qkv, block.attn_out, block.mlp):
                total += sum(p.numel() for p in module.parameters())
        return total

    def flops_per_token(self, length: int) -> int:
        """Training FLOPs per token (forward + backward) for rows of ``length`` tokens.

        Convention (Kaplan et al. / PaLM appendix B, as in nanoGPT's MFU): 6 * P for the matmul
        weights applied to every token (qkv, attention out, MLP, output linear; the embedding is a
        lookup and the adaLN/sigma MLP run once per row, so both are left out), plus
        12 * num_blocks * hidden * length for the attention scores and weighted values (QK^T and
        AV, 2 + 2 FLOPs per multiply-add pair per key, times 3 for backward). Bidirectional
        attention, so nothing is halved; masked-out (packed/pad) keys are counted as computed.
        """
        if length <= 0:
            raise ValueError(f"flops_per_token length must be > 0, got {length}")
        attention = 12 * self.cfg.num_blocks * self.cfg.hidden_size * length
        return 6 * self._per_token_matmul_parameters() + attention

    def forward(
        self,
        tokens: torch.Tensor,
        sigma_bar: torch.Tensor,
        segment_ids: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Log-scores (B, L, out_dim) float32 for noisy ``tokens`` (B, L) at noise ``sigma_bar`` (B,).

        ``segment_ids`` (B, L): 0 = padding, 1..k = packed sequences; query i attends key j iff
        they share a segment. None means every row is one full sequence (no mask at all, so SDPA
        may pick its fastest kernel): the caller guarantees there is no PAD then.
        ``positions`` (B, L): rotary positions restarting at 0 per segment; None = 0..L-1.
        ``labels`` (B, S + 1, K): label ids per segment (``Batch.labels``) for a model with labels;
        None = "no label" everywhere (the unconditional model).
        """
        if tokens.dim() != 2:
            raise ValueError(f"tokens must be (B, L), got shape {tuple(tokens.shape)}")
        batch, length = tokens.shape
        if tuple(sigma_bar.shape) != (batch,):
            raise ValueError(f"sigma_bar must be (B,) = ({batch},), got shape {tuple(sigma_bar.shape)}")
        if segment_ids is not None and segment_ids.shape != tokens.shape:
            raise ValueError(
                f"segment_ids shape {tuple(segment_ids.shape)} does not match tokens {tuple(tokens.shape)}"
            )
        if positions is not None and positions.shape != tokens.shape:
            raise ValueError(f"positions shape {tuple(positions.shape)} does not match tokens {tuple(tokens.shape)}")

        if self.time_conditioning:
            f = self.network(tokens, sigma_bar, segment_ids, positions, labels)
            return self._to_log_score(f, tokens, sigma_bar, segment_ids)
        log_p_clean = self.clean_log_probs(tokens, segment_ids, positions, labels)
        return self.log_score_from_clean(log_p_clean, tokens, sigma_bar, segment_ids)

    def clean_log_probs(
        self,
        tokens: torch.Tensor,
        segment_ids: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Time-agnostic model: log p(x0 = y | unmasked tokens, labels), (B, L, N) float32, normalised over y.

        It does not depend on the noise level, which is what lets a sampler reuse it while a row
        does not change (``diffusion.cached_score``).
        """
        if self.time_conditioning:
            raise ValueError("clean_log_probs needs a time-agnostic model (model.time_conditioning: false)")
        return torch.log_softmax(self.network(tokens, None, segment_ids, positions, labels), dim=-1)

    def log_score_from_clean(
        self,
        log_p_clean: torch.Tensor,
        tokens: torch.Tensor,
        sigma_bar: torch.Tensor,
        segment_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        """Log-scores of a time-agnostic model from ``clean_log_probs`` (pad positions all zeros)."""
        log_score = score_from_clean_log_probs(log_p_clean, tokens, sigma_bar.float(), self.num_residues)
        real = segment_ids > 0 if segment_ids is not None else tokens != self.pad_id  # (B, L)
        return log_score.masked_fill(~real[..., None], 0.0)

    def network(
        self,
        tokens: torch.Tensor,
        sigma_bar: torch.Tensor | None,
        segment_ids: torch.Tensor | None,
        positions: torch.Tensor | None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The transformer's raw output (B, L, network_out) float32; ``sigma_bar`` None when time-agnostic."""
        batch, length = tokens.shape
        device = tokens.device
        attn_mask = None
        if segment_ids is not None:
            # (B, 1, L, L) bool, same segment; padding attends padding only, so no all-False row.
            attn_mask = segment_ids[:, None, :, None] == segment_ids[:, None, None, :]
        compute_dtype = (
            torch.get_autocast_dtype(device.type)
            if torch.is_autocast_enabled(device.type)
            else self.embedding.weight.dtype
        )
        angles = self.rotary.angles(length, positions, device, compute_dtype)

        x = self.embedding(tokens).float()  # (B, L, D) float32 residual stream
        cond = self._conditioning(sigma_bar, labels, batch, x)  # (B, S + 1, C) or (B, 1, C)
        local_masks = None
        if self.cfg.local_mixing_kernel:
            radius = self.cfg.local_mixing_kernel // 2
            local_masks = neighbour_masks(segment_ids, batch, length, radius, device)  # once for all blocks
        for block in self.blocks:
            x = block(x, cond, angles, attn_mask, local_masks, segment_ids)
        return self.final(x, cond, segment_ids).float()  # (B, L, network_out)

    def _conditioning(
        self, sigma_bar: torch.Tensor | None, labels: torch.Tensor | None, batch: int, x: torch.Tensor
    ) -> torch.Tensor:
        """The adaLN input: noise-level embedding (or zeros, time-agnostic) plus the label vector of
        each segment; (B, 1, C) per row without labels, (B, S + 1, C) with them."""
        if self.sigma_embedder is not None:
            cond = self.sigma_embedder(sigma_bar)[:, None, :]  # (B, 1, C)
        else:
            cond = x.new_zeros(batch, 1, self.cfg.cond_dim)  # see __init__
        if self.label_embedder is not None:
            if labels is not None and labels.shape[1] == 2:
                # One sequence per row: condition per row, (B, 1, C), the shape of the unlabelled
                # path, so "no label" computes exactly what no labels at all computes.
                labels = labels[:, 1:]
            return cond + self.label_embedder(labels, batch).float()
        if labels is not None:
            raise ValueError("this model was trained without labels: it cannot be conditioned on labels")
        return cond

    def _to_log_score(
        self,
        f: torch.Tensor,
        tokens: torch.Tensor,
        sigma_bar: torch.Tensor,
        segment_ids: torch.Tensor | None,
    ) -> torch.Tensor:
        """Apply scale_by_sigma (absorbing), zero the current state's entry, zero pad positions."""
        if self.scale_by_sigma:
            # Stable for every sigma: log(expm1(sigma)) overflows beyond 88.7 in float32.
            f = f - log_expm1(sigma_bar.float())[:, None, None] - math.log(self.num_residues)
        # Overwrite s_hat[b, i, x_t] = 0. PAD (and MASK for uniform) lie outside the output range:
        # there we write the entry's own value back (a no-op) instead of indexing out of range.
        in_range = tokens < self.out_dim  # (B, L)
        index = torch.where(in_range, tokens, torch.zeros_like(tokens))[..., None]  # (B, L, 1)
        current = torch.where(in_range[..., None], torch.zeros((), device=f.device), f.gather(-1, index))
        log_score = f.scatter(-1, index, current)
        real = segment_ids > 0 if segment_ids is not None else tokens != self.pad_id  # (B, L)
        return log_score.masked_fill(~real[..., None], 0.0)
