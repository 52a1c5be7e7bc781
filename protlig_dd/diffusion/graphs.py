"""Forward corruption graphs of SEDD: absorbing (residue -> MASK) and uniform (residue -> random residue).

A graph owns everything that depends on the forward rate matrix Q (rate a -> b is ``Q[a, b]``;
rows sum to 0) and on sigma_bar, the total noise at time t:
  - corrupting clean tokens (``sample_transition``) and the t = 1 limit (``sample_limit``);
  - the per-position score entropy of SEDD_MATH.md (``score_entropy``);
  - the reverse-step distributions the samplers draw from (``euler_log_probs``,
    ``analytic_log_probs``, ``denoise_log_probs``), returned as unnormalised log-probabilities so
    tiny probabilities never underflow and a Gumbel-max draw needs no normalisation.

States: absorbing has dim = N + 1 (MASK = N, the last); uniform has dim = N. PAD (= N + 1) is never a
state: ``sample_transition`` leaves non-real positions untouched and ``score_entropy`` scores 0 at
any position whose x_t is not a state. The reverse-step functions take x_t already restricted to
states (the sampler substitutes a placeholder at padding and restores PAD afterwards).

All math is fp32 (log-scores from a bf16 model are cast) except the uniform analytic step, which
needs float64 (see ``Uniform.analytic_log_probs``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F

from protlig_dd.numerics import log_expm1

# score_fn(x_t (B, L) int64 with PAD at padding, sigma_bar (B,) float32) -> log_score (B, L, graph.dim).
# The model applies scale_by_sigma and sets log_score[b, i, x_t[b, i]] = 0, so this is s_hat of
# SEDD_MATH.md. Callers bind the batch layout (segment ids, positions) into the closure.
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _per_position(value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-row (B,) or scalar value against a per-position (B, L) tensor, as fp32."""
    value = torch.as_tensor(value, dtype=torch.float32, device=like.device)
    if value.dim() == 0:
        return value
    if value.dim() > like.dim():
        raise ValueError(f"noise level of shape {tuple(value.shape)} does not fit tokens {tuple(like.shape)}")
    return value.reshape(tuple(value.shape) + (1,) * (like.dim() - value.dim()))


def _stay_or_move(log_move: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
    """Log-probabilities of "move to y with probability c_y, else stay at x_t" (stay clamped at 0).

    log_move: (B, L, dim) log c_y (the x_t entry is ignored). Returns (B, L, dim) log-probs whose
    x_t entry is log(1 - sum_{y != x_t} c_y), or -inf when the moves already use up all the mass.
    """
    here = F.one_hot(x_t, num_classes=log_move.shape[-1]).bool()  # (B, L, dim)
    log_move = log_move.masked_fill(here, -math.inf)
    move_mass = torch.logsumexp(log_move, dim=-1, keepdim=True).exp().clamp(max=1.0)  # (B, L, 1)
    log_stay = torch.log1p(-move_mass)  # (B, L, 1), -inf when move_mass == 1
    return torch.where(here, log_stay, log_move)


def score_from_clean_log_probs(
    log_p_clean: torch.Tensor, x_t: torch.Tensor, sigma_bar: torch.Tensor | float, num_residues: int
) -> torch.Tensor:
    """Absorbing-graph log-scores (B, L, N+1) from clean-data log-probabilities (B, L, N).

    For the absorbing graph the concrete score at a MASK position factorises (RADD, Ou et al. 2024;
    MDLM): s(MASK -> y) = p_t(y) / p_t(MASK) = p(x0 = y | unmasked) / (exp(sigma_bar) - 1), so
    log s_hat[y] = log p(y | unmasked) - log(exp(sigma_bar) - 1) for every residue y, and the current
    state's entry (MASK, or the residue at an unmasked position) is 0 by convention. ``log_p_clean``
    must be normalised over the N residues; then the score entropy at a MASK position is
    -log p(x0) / (exp(sigma_bar) - 1): MDLM's weighted cross-entropy. ``sigma_bar`` is per row (B,).
    """
    if log_p_clean.shape[-1] != num_residues:
        raise ValueError(
            f"score_from_clean_log_probs: expected {num_residues} residue log-probabilities, "
            f"got {log_p_clean.shape[-1]}"
        )
    sigma = _per_position(sigma_bar, x_t)  # (B, 1) or scalar
    shift = log_expm1(sigma).unsqueeze(-1) if sigma.dim() else log_expm1(sigma)  # (B, 1, 1) or scalar
    mask_column = torch.zeros_like(log_p_clean[..., :1], dtype=torch.float32)
    log_score = torch.cat((log_p_clean.float() - shift, mask_column), dim=-1)  # (B, L, N + 1)
    # The current state's entry is 0 (MASK's column already is; ids beyond MASK, i.e. PAD, too).
    index = torch.where(x_t < num_residues, x_t, torch.full_like(x_t, num_residues)).unsqueeze(-1)
    return log_score.scatter(-1, index, torch.zeros_like(index, dtype=log_score.dtype))


class Graph(ABC):
    """A forward corruption process on N residue states (plus MASK for the absorbing graph)."""

    is_absorbing: bool

    def __init__(self, num_residues: int) -> None:
        if num_residues < 2:
            raise ValueError(f"a diffusion graph needs at least 2 residue states, got {num_residues}")
        self.num_residues = int(num_residues)

    @property
    @abstractmethod
    def dim(self) -> int:
        """Number of diffusion states (the last axis of the score)."""

    @abstractmethod
    def rate_matrix(self, device: torch.device | str | None = None) -> torch.Tensor:
        """(dim, dim) forward rate matrix Q, Q[a, b] = rate of a -> b for a != b, rows sum to 0."""

    @abstractmethod
    def transition_probs(self, x0: torch.Tensor, sigma_bar: torch.Tensor | float) -> torch.Tensor:
        """p_t(y | x0) = exp(sigma_bar Q)[x0, y]: (B, L) states -> (B, L, dim)."""

    @abstractmethod
    def _corrupt(self, x0: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The token a corrupted position takes (MASK, or a uniform residue draw)."""

    @abstractmethod
    def sample_limit(
        self, shape: tuple[int, ...], device: torch.device | str, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Tokens (int64) drawn from the t = 1 limit: all MASK (absorbing) or uniform residues."""

    @abstractmethod
    def score_entropy(
        self, log_score: torch.Tensor, sigma_bar: torch.Tensor, x_t: torch.Tensor, x0: torch.Tensor
    ) -> torch.Tensor:
        """Per-position score entropy l_i (B, L), without the sigma_bar'(t) factor; 0 where x_t is no state.

        log_score (B, L, dim) are the model's s_hat; sigma_bar is per row (B,) or per position.
        """

    @abstractmethod
    def analytic_log_probs(
        self, log_score: torch.Tensor, x_t: torch.Tensor, delta: torch.Tensor | float
    ) -> torch.Tensor:
        """Tweedie tau-leaping from sigma_bar(t) to sigma_bar(t) - delta: (B, L, dim) log-probs."""

    def sample_transition(
        self,
        x0: torch.Tensor,
        sigma_bar: torch.Tensor,
        real_mask: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Corrupt each real position of x0 (B, L) independently with probability 1 - exp(-sigma_bar).

        Positions where ``real_mask`` is False (padding) are returned unchanged: pads are never noised.
        """
        move_chance = -torch.expm1(-_per_position(sigma_bar, x0))  # (B, 1) or scalar
        draw = torch.rand(x0.shape, generator=generator, device=x0.device)  # (B, L)
        move = (draw < move_chance) & real_mask
        return torch.where(move, self._corrupt(x0, generator), x0)

    def reverse_weights(self, x_t: torch.Tensor) -> torch.Tensor:
        """w(x_t, y) = Q[y, x_t], the forward rate into x_t from each y: (B, L) -> (B, L, dim)."""
        return self.rate_matrix(x_t.device).T[x_t]

    def euler_log_probs(
        self, log_score: torch.Tensor, x_t: torch.Tensor, step: torch.Tensor | float
    ) -> torch.Tensor:
        """Euler (tau-leaping) step: Cat(e_{x_t} + step * R_hat(x_t)) as (B, L, dim) log-probs.

        ``step`` = dt * sigma_bar'(t) per row (B,) or scalar. R_hat[y] = w(x_t, y) s[y] for y != x_t and
        the stay probability 1 - sum of the others is clamped at 0.
        """
        log_step = torch.log(_per_position(step, x_t)).unsqueeze(-1)  # (B, 1, 1) or scalar
        log_move = log_step + torch.log(self.reverse_weights(x_t)) + log_score.float()  # (B, L, dim)
        return _stay_or_move(log_move, x_t)

    def denoise_log_probs(
        self, log_score: torch.Tensor, x_t: torch.Tensor, sigma_bar: torch.Tensor | float
    ) -> torch.Tensor:
        """Final step from sigma_bar(eps) to 0: the analytic step over residue states only (no MASK)."""
        return self.analytic_log_probs(log_score, x_t, sigma_bar)[..., : self.num_residues]


class Absorbing(Graph):
    """Each residue jumps to MASK at rate 1; MASK (state N) is absorbing."""

    is_absorbing = True

    @property
    def dim(self) -> int:
        return self.num_residues + 1

    @property
    def mask_id(self) -> int:
        """The MASK state (== num_residues, the last state)."""
        return self.num_residues

    def rate_matrix(self, device: torch.device | str | None = None) -> torch.Tensor:
        q = torch.zeros(self.dim, self.dim, device=device)
        idx = torch.arange(self.num_residues, device=device)
        q[idx, idx] = -1.0
        q[idx, self.mask_id] = 1.0
        return q

    def transition_probs(self, x0: torch.Tensor, sigma_bar: torch.Tensor | float) -> torch.Tensor:
        keep = torch.exp(-_per_position(sigma_bar, x0)).unsqueeze(-1)  # (B, 1, 1)
        probs = keep * F.one_hot(x0, self.dim).float()  # (B, L, dim)
        probs[..., self.mask_id] += (1.0 - keep[..., 0]).expand_as(x0)
        return probs

    def _corrupt(self, x0: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return torch.full_like(x0, self.mask_id)

    def sample_limit(
        self, shape: tuple[int, ...], device: torch.device | str, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return torch.full(shape, self.mask_id, dtype=torch.int64, device=device)

    def score_entropy(
        self, log_score: torch.Tensor, sigma_bar: torch.Tensor, x_t: torch.Tensor, x0: torch.Tensor
    ) -> torch.Tensor:
        """Closed form at MASK positions, r = 1 / (exp(sigma_bar) - 1):

        l = sum_{y != MASK} exp(s_hat[y]) - r s_hat[x0] + K(r); l = 0 at every other position.
        """
        is_mask = x_t == self.mask_id  # (B, L)
        # Only MASK positions count. Zero the others *before* exp: a large log-score at an unmasked
        # position would overflow exp, and torch.where afterwards keeps the loss finite but not its
        # gradient (inf * 0 = NaN in the backward of exp).
        log_score = log_score.float().masked_fill(~is_mask.unsqueeze(-1), 0.0)
        log_esm1 = log_expm1(_per_position(sigma_bar, x_t))  # (B, 1)
        r = torch.exp(-log_esm1)
        const = r * (-log_esm1 - 1.0)  # K(r) with log r = -log_esm1, finite even where r underflows
        safe_x0 = x0.clamp(0, self.num_residues - 1)  # x0 is only read where x_t is MASK (a residue there)
        at_x0 = log_score.gather(-1, safe_x0.unsqueeze(-1)).squeeze(-1)  # (B, L)
        positive = log_score[..., : self.num_residues].exp().sum(dim=-1)  # (B, L)
        entropy = positive - r * at_x0 + const
        return torch.where(is_mask, entropy, torch.zeros_like(entropy))

    def score_from_clean(
        self, log_p_clean: torch.Tensor, x_t: torch.Tensor, sigma_bar: torch.Tensor | float
    ) -> torch.Tensor:
        """Log-scores of a time-agnostic model: see ``score_from_clean_log_probs``."""
        return score_from_clean_log_probs(log_p_clean, x_t, sigma_bar, self.num_residues)

    def analytic_log_probs(
        self, log_score: torch.Tensor, x_t: torch.Tensor, delta: torch.Tensor | float
    ) -> torch.Tensor:
        """At MASK: P(y) = (exp(delta) - 1) s[y] for y != MASK, P(MASK) = 1 - sum (clamped at 0).

        Unmasked positions stay where they are with probability 1.
        """
        log_esm1 = log_expm1(_per_position(delta, x_t)).unsqueeze(-1)  # (B, 1, 1) or scalar
        log_move = log_esm1 + torch.log(self.reverse_weights(x_t)) + log_score.float()  # (B, L, dim)
        return _stay_or_move(log_move, x_t)


class Uniform(Graph):
    """Q = (1/N) 11^T - I: at rate (N-1)/N a residue jumps to one of the other N-1 residues.

    Equivalently, with probability 1 - exp(-sigma_bar) a token is replaced by a uniform draw over all N
    residues (which may equal itself).
    """

    is_absorbing = False

    @property
    def dim(self) -> int:
        return self.num_residues

    def rate_matrix(self, device: torch.device | str | None = None) -> torch.Tensor:
        n = self.num_residues
        return torch.full((n, n), 1.0 / n, device=device) - torch.eye(n, device=device)

    def transition_probs(self, x0: torch.Tensor, sigma_bar: torch.Tensor | float) -> torch.Tensor:
        keep = torch.exp(-_per_position(sigma_bar, x0)).unsqueeze(-1)  # (B, 1, 1)
        return keep * F.one_hot(x0, self.dim).float() + (1.0 - keep) / self.dim

    def _corrupt(self, x0: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return torch.randint(0, self.dim, x0.shape, generator=generator, device=x0.device)

    def sample_limit(
        self, shape: tuple[int, ...], device: torch.device | str, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        return torch.randint(0, self.dim, shape, generator=generator, device=device)

    def score_entropy(
        self, log_score: torch.Tensor, sigma_bar: torch.Tensor, x_t: torch.Tensor, x0: torch.Tensor
    ) -> torch.Tensor:
        """SEDD's closed form for Q = (1/N) 11^T - I (weights w = 1/N for every y != x_t).

        With e = exp(sigma_bar) - 1 and a = e / (e + N):
          x_t == x0: every r_y = a;  x_t != x0: r_{x0} = 1 / a, every other r_y = 1.
        """
        n = self.num_residues
        log_score = log_score.float()
        valid = (x_t >= 0) & (x_t < n)
        safe_xt = torch.where(valid, x_t, torch.zeros_like(x_t))
        safe_x0 = x0.clamp(0, n - 1)
        log_esm1 = log_expm1(_per_position(sigma_bar, x_t))  # (B, 1)
        inv_esm1 = torch.exp(-log_esm1)  # 1 / (exp(sigma) - 1)
        log_ratio = -torch.log1p(n * inv_esm1)  # log a, a = e / (e + N)
        ratio = torch.exp(log_ratio)

        at_xt = log_score.gather(-1, safe_xt.unsqueeze(-1)).squeeze(-1)  # (B, L)
        at_x0 = log_score.gather(-1, safe_x0.unsqueeze(-1)).squeeze(-1)  # (B, L)
        # (1/N) sum_{y != x_t} of s_hat and of exp(s_hat).
        log_others = (log_score.sum(dim=-1) - at_xt) / n
        exp_others = (log_score.exp().sum(dim=-1) - at_xt.exp()) / n

        same = safe_xt == safe_x0
        negative = torch.where(same, ratio * log_others, inv_esm1 * at_x0 + log_others)
        const = torch.where(
            same,
            (n - 1) / n * ratio * (log_ratio - 1.0),
            ((-log_ratio - 1.0) / ratio - (n - 2)) / n,  # (K(1/a) + (N-2) K(1)) / N
        )
        entropy = exp_others - negative + const
        return torch.where(valid, entropy, torch.zeros_like(entropy))

    def analytic_log_probs(
        self, log_score: torch.Tensor, x_t: torch.Tensor, delta: torch.Tensor | float
    ) -> torch.Tensor:
        """P(y) proportional to [exp(-delta Q) s]_y * p_delta(x_t | y) (SEDD's staggered score).

        Computed in float64: exp(-delta Q) s = e^delta s + (1 - e^delta) mean(s) cancels badly in
        fp32 when delta is large. s is rescaled by its maximum first (the result is linear in s).
        """
        n = self.num_residues
        log_score = log_score.double()
        top = log_score.amax(dim=-1, keepdim=True)
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        score = torch.exp(log_score - top)  # (B, L, N), max entry 1
        d = _per_position(delta, x_t).double().unsqueeze(-1)  # (B, 1, 1) or scalar
        grow = torch.exp(d)
        staggered = grow * score + (1.0 - grow) / n * score.sum(dim=-1, keepdim=True)
        move = -torch.expm1(-d) / n  # p_delta(x_t | y) for y != x_t
        here = F.one_hot(x_t, n).double()
        transition = move + here * torch.exp(-d)  # (B, L, N)
        return torch.log((staggered * transition).clamp_min(0.0)).float()


class GraphSpec(Protocol):
    """What ``build_graph`` reads (``config.GraphConfig`` has it)."""

    type: str


def build_graph(cfg: GraphSpec, num_residues: int) -> Graph:
    """The graph named by ``cfg.type`` over ``num_residues`` residue states."""
    if cfg.type == "absorbing":
        return Absorbing(num_residues)
    if cfg.type == "uniform":
        return Uniform(num_residues)
    raise ValueError(f"graph.type must be absorbing or uniform, got {cfg.type!r}")
