"""The resumable, sharded training batch stream and the deterministic evaluation batches.

Training (``TrainBatchStream``): one infinite global sequence of batches, the same for every
world size. Epoch e's order comes from an RNG seeded by (seed, e); the order is cut into windows of
``window_size`` sequences and each window is planned with its own RNG (seed, e, window), see
``batching.py``. Epoch e's planned batches are followed by epoch e+1's, with nothing dropped, and
global batch g goes to rank ``g % world_size``. So W ranks taking one batch each per round consume
global batches in order, exactly as one process taking W batches would.

The state is a handful of ints: the global cursor (global batches consumed by all ranks together,
identical on every rank after the same number of rounds) and a planning window at or before it
(the window holding the first batch of the last round). A checkpoint written by rank 0 therefore
restores every rank, under any world size: a run saved with 2 processes continues in 1 (or 4) with
the next global batches. Re-planning from that window on is enough, so restoring is
O(window + world_size) and the next batches are exactly those an uninterrupted run would see.

With ``num_workers > 0`` a DataLoader materialises batches in worker processes; the plans, and so
the state, stay in the main process. The state only advances when a batch is handed out, so batches
prefetched by the workers but not yet consumed are planned again after a restore. Gathering is
cheap (tens of millions of tokens/s in the main process on the embedded sample), so workers pay
off mainly when the memory-mapped cache is on a slow disk and the gather waits on page faults.
Planning a window of 16384 sequences takes tens of milliseconds in the main process, once every
few hundred batches.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Generator, Iterator
from dataclasses import dataclass

import numpy as np
import torch.utils.data

from protlig_dd.config import DataConfig
from protlig_dd.data.batch import Batch
from protlig_dd.data.batching import (
    DEFAULT_WINDOW_SIZE,
    BatchPlan,
    WindowPlan,
    batch_from_arrays,
    check_batch_shape,
    epoch_order,
    gather_arrays,
    gather_labels,
    materialise,
    plan_window,
    usable_sequences,
    window_rng,
)
from protlig_dd.data.sequence_set import SequenceSet

logger = logging.getLogger(__name__)

# Keys of state_dict() that must match on load: they decide which batches the plan holds.
_PLAN_KEYS = (
    "seed",
    "num_sequences",
    "num_residues",
    "max_length",
    "tokens_per_batch",
    "packing",
    "drop_long",
    "bucket_by_length",
    "window_size",
)
_POSITION_KEYS = ("cursor", "epoch", "window", "window_first_batch")
_STAT_KEYS = ("real_tokens", "grid_tokens")


@dataclass(frozen=True)
class _Position:
    """Where the stream is: ``cursor`` global batches were taken, by all ranks together.

    ``epoch``/``window``/``window_first_batch`` name a planning window that starts at or before the
    cursor (and the global index of its first batch), so resuming re-plans only from there on.
    """

    cursor: int
    epoch: int
    window: int
    window_first_batch: int


# A planned batch of this rank: (plan, stream position after it, epoch the batch belongs to).
_Planned = tuple[BatchPlan, _Position, int]


class _PlanDataset(torch.utils.data.Dataset):
    """Map-style dataset whose "index" is a planned batch: workers only gather the tokens."""

    def __init__(self, sequences: SequenceSet, pad_id: int) -> None:
        self.sequences = sequences
        self.pad_id = pad_id

    def __getitem__(self, plan: BatchPlan) -> tuple[np.ndarray, ...]:
        # Compact numpy grids pickle through the worker queue faster than tensors in shared memory.
        return (*gather_arrays(self.sequences, plan, self.pad_id), gather_labels(self.sequences, plan))


class _RecordingSampler(torch.utils.data.Sampler):
    """Feeds the (infinite) plan iterator to a DataLoader, remembering what is in flight.

    The DataLoader returns results in the order it drew them, so ``pending`` pairs each result
    with its plan, the stream position after it and its epoch, without sending them to the workers.
    """

    def __init__(self, plans: Iterator[_Planned], pending: deque[_Planned]) -> None:
        self.plans = plans
        self.pending = pending

    def __iter__(self) -> Iterator[BatchPlan]:
        for planned in self.plans:
            self.pending.append(planned)
            yield planned[0]


def _as_is(item: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """DataLoader collate function that keeps the worker's result untouched."""
    return item


class TrainBatchStream:
    """Infinite, sharded, exactly resumable iterator of training batches (see the module doc).

    ``long_sequences`` is ``crop`` (a fresh random crop of ``max_length`` each epoch) or ``drop``.
    ``packing`` packs several sequences per row; otherwise rows hold one sequence each, grouped by
    length when ``bucket_by_length``. Each batch holds at most ``tokens_per_batch`` grid tokens.
    """

    def __init__(
        self,
        sequences: SequenceSet,
        *,
        max_length: int,
        tokens_per_batch: int,
        packing: bool,
        long_sequences: str,
        bucket_by_length: bool,
        pad_id: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        window_size: int = DEFAULT_WINDOW_SIZE,
    ) -> None:
        check_batch_shape(max_length, tokens_per_batch)
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank {rank}, world_size {world_size}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0 (numpy SeedSequence), got {seed}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        # Checks the policy too, so a bad one fails here rather than at the first batch.
        usable = usable_sequences(sequences.lengths, max_length=max_length, long_sequences=long_sequences)
        num_usable = int(usable.sum())
        if num_usable == 0:
            raise ValueError(
                f"no usable training sequence among {len(sequences)} (long_sequences={long_sequences!r}, "
                f"max_length {max_length})"
            )
        self.sequences = sequences
        self.max_length = max_length
        self.tokens_per_batch = tokens_per_batch
        self.packing = packing
        self.long_sequences = long_sequences
        self.bucket_by_length = bucket_by_length
        self.pad_id = pad_id
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers
        self.window_size = window_size
        self._position = _Position(cursor=0, epoch=0, window=0, window_first_batch=0)
        self._epoch = 0  # epoch of the last batch handed out (the position's own epoch may be earlier)
        self._real_tokens = 0
        self._grid_tokens = 0
        self._last_plan: BatchPlan | None = None
        self._iterator: Generator[tuple[Batch, _Planned], None, None] | None = None

    # ----- iteration -------------------------------------------------------------------------
    def __iter__(self) -> TrainBatchStream:
        return self

    def __next__(self) -> Batch:
        if self._iterator is None:
            self._iterator = self._start(self._position)
        batch, (plan, position, epoch) = next(self._iterator)
        self._position = position
        self._epoch = epoch
        self._last_plan = plan
        self._real_tokens += plan.num_real_tokens
        self._grid_tokens += plan.num_tokens
        return batch

    def _start(self, position: _Position) -> Generator[tuple[Batch, _Planned], None, None]:
        plans = self._plans(position)
        if self.num_workers == 0:
            for planned in plans:
                yield materialise(self.sequences, planned[0], self.pad_id), planned
            return
        pending: deque[_Planned] = deque()
        loader = torch.utils.data.DataLoader(
            _PlanDataset(self.sequences, self.pad_id),
            batch_size=None,
            sampler=_RecordingSampler(plans, pending),
            num_workers=self.num_workers,
            collate_fn=_as_is,
        )
        # The loader iterator lives as long as the stream position is continuous: its worker
        # processes persist across epochs because the sampler never ends.
        for tokens, segment_ids, positions, labels in loader:
            planned = pending.popleft()
            yield batch_from_arrays(tokens, segment_ids, positions, planned[0].num_real_tokens, labels), planned

    def _windows(
        self, epoch: int, window: int, first_batch: int
    ) -> Iterator[tuple[int, int, int, WindowPlan]]:
        """(epoch, window, global index of its first batch, plan) of every window from the given one on."""
        while True:
            order = epoch_order(
                self.sequences.lengths,
                max_length=self.max_length,
                long_sequences=self.long_sequences,
                seed=self.seed,
                epoch=epoch,
            )
            num_windows = -(-len(order) // self.window_size)
            while window < num_windows:
                plan = plan_window(
                    order[window * self.window_size : (window + 1) * self.window_size],
                    self.sequences.lengths,
                    max_length=self.max_length,
                    tokens_per_batch=self.tokens_per_batch,
                    packing=self.packing,
                    bucket_by_length=self.bucket_by_length,
                    rng=window_rng(self.seed, epoch, window),
                )
                yield epoch, window, first_batch, plan
                first_batch += len(plan)
                window += 1
            logger.debug("data epoch %d planned: it ends before global batch %d", epoch, first_batch)
            epoch, window = epoch + 1, 0

    def _plans(self, start: _Position) -> Iterator[_Planned]:
        """This rank's planned batches from ``start`` on: global batches cursor + rank + k * world_size."""
        world, rank = self.world_size, self.rank
        wanted = start.cursor + rank  # global index of this rank's next batch
        # Planned windows that may still hold the first batch of the current round, oldest first:
        # the oldest of them becomes the position's window, the same one on every rank.
        recent: deque[tuple[int, int, int]] = deque()
        for epoch, window, first, plan in self._windows(start.epoch, start.window, start.window_first_batch):
            recent.append((epoch, window, first))
            end = first + len(plan)
            while wanted < end:
                round_start = wanted - rank
                while len(recent) > 1 and recent[1][2] <= round_start:
                    recent.popleft()
                yield plan.batch(wanted - first), _Position(round_start + world, *recent[0]), epoch
                wanted += world

    def close(self) -> None:
        """Stop worker processes now (iteration may continue: they are restarted lazily)."""
        if self._iterator is not None:
            # Closing the generator drops its DataLoader iterator, which shuts the workers down.
            self._iterator.close()
            self._iterator = None

    # ----- statistics ------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        """Epoch of the most recently returned batch (before the first: that of the saved position)."""
        return self._epoch

    @property
    def cursor(self) -> int:
        """Global batches consumed by all ranks together (the same on every rank after a round)."""
        return self._position.cursor

    @property
    def padding_waste(self) -> float:
        """Pad tokens / grid tokens over every batch returned so far (restored with the state)."""
        return 1.0 - self._real_tokens / self._grid_tokens if self._grid_tokens else 0.0

    @property
    def last_plan(self) -> BatchPlan | None:
        """The plan of the most recently returned batch: which crops of which sequences it holds."""
        return self._last_plan

    @property
    def last_padding_waste(self) -> float:
        """Padding waste of the most recently returned batch."""
        return self._last_plan.padding_waste if self._last_plan is not None else 0.0

    # ----- state -----------------------------------------------------------------------------
    def _plan_identity(self) -> dict[str, int]:
        return {
            "seed": self.seed,
            "num_sequences": len(self.sequences),
            "num_residues": self.sequences.num_residues,
            "max_length": self.max_length,
            "tokens_per_batch": self.tokens_per_batch,
            "packing": int(self.packing),
            "drop_long": int(self.long_sequences == "drop"),
            "bucket_by_length": int(self.bucket_by_length),
            "window_size": self.window_size,
        }

    def state_dict(self) -> dict[str, int]:
        """Plain ints (torch.load(weights_only=True) safe); identical on all ranks at the same step
        (apart from the token statistics, which count this rank's batches).

        The plan-defining settings are included so that a mismatch is caught on load. The world
        size is not one of them: the global batch order does not depend on it.
        """
        position = self._position
        return {
            "cursor": position.cursor,
            "epoch": position.epoch,
            "window": position.window,
            "window_first_batch": position.window_first_batch,
            "real_tokens": self._real_tokens,
            "grid_tokens": self._grid_tokens,
            **self._plan_identity(),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue exactly after the global batches counted in ``state``, under any world size:
        rank r takes global batches cursor + r, cursor + r + world_size, ...

        Raises ValueError if a key is missing or a plan-defining setting (seed, data, lengths,
        budget, packing...) differs: the stream could not then replay the same batches.
        """
        missing = [key for key in (*_POSITION_KEYS, *_STAT_KEYS, *_PLAN_KEYS) if key not in state]
        if missing:
            raise ValueError(f"batch stream state lacks key(s) {missing}")
        for key, expected in self._plan_identity().items():
            if int(state[key]) != expected:
                raise ValueError(
                    f"batch stream state was saved with {key}={state[key]}, but this stream has "
                    f"{key}={expected}: the saved data position does not apply"
                )
        position = _Position(*(int(state[key]) for key in _POSITION_KEYS))
        if min(position.cursor, position.epoch, position.window, position.window_first_batch) < 0:
            raise ValueError(f"batch stream state holds a negative position: {position}")
        if position.window_first_batch > position.cursor:
            raise ValueError(
                f"batch stream state is inconsistent: its window starts at global batch "
                f"{position.window_first_batch}, after the cursor {position.cursor}"
            )
        self._position = position
        self._epoch = position.epoch
        self._real_tokens = int(state["real_tokens"])
        self._grid_tokens = int(state["grid_tokens"])
        self._last_plan = None
        self.close()


def build_train_stream(
    data_cfg: DataConfig,
    sequences: SequenceSet,
    max_length: int,
    pad_id: int,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
) -> TrainBatchStream:
    """The training stream configured by the ``data`` config section."""
    return TrainBatchStream(
        sequences,
        max_length=max_length,
        tokens_per_batch=data_cfg.tokens_per_batch,
        packing=data_cfg.packing,
        long_sequences=data_cfg.long_sequences,
        bucket_by_length=data_cfg.bucket_by_length,
        pad_id=pad_id,
        seed=seed,
        rank=rank,
        world_size=world_size,
        num_workers=data_cfg.num_workers,
    )


def eval_windows(lengths: np.ndarray, max_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split each sequence into consecutive, non-overlapping windows of at most ``max_length``.

    Returns (set_index, window_start, window_length), three (W,) int64 arrays in sequence order.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    num_windows = -(-lengths // max_length)  # (n,) ceil; 0 for an empty sequence
    set_index = np.repeat(np.arange(len(lengths)), num_windows)
    first_window = np.cumsum(num_windows) - num_windows
    window_start = (np.arange(len(set_index)) - np.repeat(first_window, num_windows)) * max_length
    window_length = np.minimum(max_length, lengths[set_index] - window_start)
    return set_index, window_start, window_length


def eval_batches(
    sequences: SequenceSet, *, max_length: int, batch_size: int, pad_id: int, limit: int | None = None
) -> Iterator[tuple[Batch, list[tuple[int, int]]]]:
    """Deterministic, unpacked validation batches with, per row, (set_index, window_start).

    The first ``limit`` sequences of the set (all when None) are scored. A sequence longer than
    ``max_length`` is split into consecutive non-overlapping windows of at most ``max_length``, and
    each window is scored as a sequence of its own (so its bound is on p(window | length), which
    ignores the context across the cut). Every residue is scored exactly once. Windows are sorted
    longest first (ties in set order), so rows of a batch have similar lengths and the largest
    batch comes first.
    """
    if max_length < 1 or batch_size < 1:
        raise ValueError(f"max_length and batch_size must be >= 1, got {max_length} and {batch_size}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None (the whole set), got {limit}")
    count = len(sequences) if limit is None else min(limit, len(sequences))
    set_index, window_start, window_length = eval_windows(sequences.lengths[:count], max_length)
    order = np.lexsort((window_start, set_index, -window_length))
    for first in range(0, len(order), batch_size):
        chosen = order[first : first + batch_size]
        rows = [
            [(k, s, n)]
            for k, s, n in zip(
                set_index[chosen].tolist(),
                window_start[chosen].tolist(),
                window_length[chosen].tolist(),
                strict=True,
            )
        ]
        plan = BatchPlan(width=int(window_length[chosen].max()), rows=rows)
        yield materialise(sequences, plan, pad_id), [(row[0][0], row[0][1]) for row in rows]
