"""A score function for time-agnostic absorbing models that runs the network only on changed rows.

A time-agnostic model (``model.time_conditioning: false``) computes p(x0 | unmasked tokens), which
does not depend on the noise level; the score is that times an analytic function of sigma_bar
(``graphs.score_from_clean_log_probs``). During sampling most steps change no position of a row
(with 1,024 steps for 256 residues, at most 256 steps can unmask something), so the network output
of the previous step is still exact for that row. ``CachedCleanScore`` keeps it and re-runs the
network only on rows whose tokens changed since it was computed and that still hold a MASK (a row
without MASK never moves again, so its score is not read). Its output at every position a sampler
reads is the same as the uncached model's, so the same seed draws the same sequences.

It counts the network passes per row (``passes``): the figure the sample CLI reports.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# clean_fn(tokens of some rows (R, L), their row indices (R,)) -> log p(x0 | unmasked) (R, L, N).
CleanFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# to_score(log p (B, L, N), tokens (B, L), sigma_bar (B,)) -> log-scores (B, L, dim).
ToScoreFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class CachedCleanScore:
    """ScoreFn ``(x_t, sigma_bar) -> log_score`` over a fixed batch, caching the network per row.

    With ``use_cache`` False every call runs the network on every row (the plain sampler, for
    comparisons); the pass counter still counts.
    """

    def __init__(self, clean_fn: CleanFn, to_score: ToScoreFn, mask_id: int, use_cache: bool = True) -> None:
        self.clean_fn = clean_fn
        self.to_score = to_score
        self.mask_id = mask_id
        self.use_cache = use_cache
        self._tokens: torch.Tensor | None = None  # (B, L) the tokens the cached log-probs belong to
        self._log_p: torch.Tensor | None = None  # (B, L, N)
        self.passes: torch.Tensor | None = None  # (B,) int64 network passes per row

    def __call__(self, x_t: torch.Tensor, sigma_bar: torch.Tensor) -> torch.Tensor:
        if self._tokens is None or not self.use_cache:
            stale = torch.ones(x_t.shape[0], dtype=torch.bool, device=x_t.device)
        else:
            if self._tokens.shape != x_t.shape:
                raise ValueError(
                    f"CachedCleanScore serves one batch of shape {tuple(self._tokens.shape)}, got {tuple(x_t.shape)}"
                )
            changed = (x_t != self._tokens).any(dim=1)
            stale = changed & (x_t == self.mask_id).any(dim=1)
        if self.passes is None:
            self.passes = torch.zeros(x_t.shape[0], dtype=torch.int64, device=x_t.device)
        rows = stale.nonzero().squeeze(1)  # one host sync per step: the sampler is host-driven anyway
        if rows.numel() == x_t.shape[0]:
            self._log_p = self.clean_fn(x_t, rows).float()
        elif rows.numel() > 0:
            assert self._log_p is not None
            # In place: to_score builds a new tensor from the cache, so no earlier output aliases it.
            self._log_p[rows] = self.clean_fn(x_t[rows], rows).float()
        self.passes[rows] += 1
        self._tokens = x_t.clone()
        assert self._log_p is not None
        return self.to_score(self._log_p, x_t, sigma_bar)


class CountedScore:
    """A plain score function that counts its calls: every call is one network pass over every row."""

    def __init__(self, score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], num_rows: int) -> None:
        self.score = score
        self.passes = torch.zeros(num_rows, dtype=torch.int64)  # (B,) network passes per row

    def __call__(self, x_t: torch.Tensor, sigma_bar: torch.Tensor) -> torch.Tensor:
        self.passes += 1
        return self.score(x_t, sigma_bar)
