"""Planning and materialising training batches: crop or drop, pack or bucket, fill a token budget.

Planning and materialising are separate steps so that the sampler (which owns the order and the
resumable state) stays cheap and exact, while the token copying can run in worker processes:

* ``epoch_order`` shuffles the sequences of a ``SequenceSet`` for one epoch (dropping those
  longer than ``max_length`` under the ``drop`` policy). The order depends on (seed, epoch) only.
* ``plan_window`` turns one window of that order (a few thousand sequences) into batches, drawing
  a fresh random crop for each long sequence from the window's RNG (derived from seed, epoch and
  window index, so any window can be re-planned on resume without replaying the ones before it).
  Packed mode: best-fit-decreasing bin packing into rows of ``max_length`` tokens, rows shuffled
  and cut into batches of ``tokens_per_batch // max_length`` rows. Unpacked mode: one sequence per
  row, either bucketed (sort the window by length, cut greedily so rows * padded_length <= budget,
  shuffle the batches) or plain (``tokens_per_batch // max_length`` rows in shuffled order).
  The last batch of a window may hold fewer rows than the budget allows.
* ``BatchPlan`` is one batch as plain data: per row, a list of (set_index, crop_start, crop_length).
* ``gather_arrays`` copies the planned tokens with one vectorised numpy gather; ``materialise``
  turns the result into a ``Batch``.

Padding waste (pad tokens / all tokens of the grid) is reported per plan by
``BatchPlan.padding_waste``; the stream in ``loader.py`` accumulates it.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
import torch

from protlig_dd.data.batch import Batch
from protlig_dd.data.labels import label_grid
from protlig_dd.data.sequence_set import SequenceSet

LONG_SEQUENCE_POLICIES = ("crop", "drop")
# Sequences per planning window: large enough that best-fit packing and length bucketing find
# good partners (padding waste well under 1% at 512), small enough that planning one window is a
# few milliseconds and batches still mix sequences from across the whole epoch order.
DEFAULT_WINDOW_SIZE = 16384

# Tags that keep the epoch-order stream and the per-window streams of numpy's SeedSequence apart
# (SeedSequence pads entropy with zeros, so [seed, epoch] and [seed, epoch, 0] would collide).
_ORDER_STREAM = 0
_WINDOW_STREAM = 1

Entry = tuple[int, int, int]  # (set_index, crop_start, crop_length)


@dataclass(frozen=True)
class BatchPlan:
    """One batch as plain data (picklable, no arrays): what to copy where.

    ``rows[r]`` lists the (set_index, crop_start, crop_length) of the sequences placed one after
    another in row r; every row is ``width`` tokens wide, the rest is padding.
    """

    width: int
    rows: list[list[Entry]]

    @property
    def num_real_tokens(self) -> int:
        return sum(length for row in self.rows for _, _, length in row)

    @property
    def num_tokens(self) -> int:
        """Size of the token grid, rows * width (real tokens plus padding)."""
        return len(self.rows) * self.width

    @property
    def padding_waste(self) -> float:
        """Fraction of the grid that is padding."""
        return 1.0 - self.num_real_tokens / self.num_tokens


@dataclass
class WindowPlan:
    """The batches planned from one window of an epoch, held as flat arrays.

    Entries (placed sequences) are listed row by row; rows are listed batch by batch.
    """

    set_index: np.ndarray  # (E,) int64, sequence index in the SequenceSet
    crop_start: np.ndarray  # (E,) int64, first residue of the crop
    crop_length: np.ndarray  # (E,) int64, residues placed (<= max_length)
    row_offsets: np.ndarray  # (R + 1,) int64, entries of row r are [row_offsets[r], row_offsets[r + 1])
    batch_offsets: np.ndarray  # (NB + 1,) int64, rows of batch b are [batch_offsets[b], batch_offsets[b + 1])
    batch_width: np.ndarray  # (NB,) int64, row width of each batch

    def __len__(self) -> int:
        return len(self.batch_width)

    def batch(self, b: int) -> BatchPlan:
        """The b-th batch of the window as plain data."""
        if not 0 <= b < len(self):
            raise IndexError(f"batch {b} outside a window of {len(self)} batches")
        first_row, end_row = int(self.batch_offsets[b]), int(self.batch_offsets[b + 1])
        bounds = self.row_offsets[first_row : end_row + 1].tolist()
        entries = list(
            zip(
                self.set_index[bounds[0] : bounds[-1]].tolist(),
                self.crop_start[bounds[0] : bounds[-1]].tolist(),
                self.crop_length[bounds[0] : bounds[-1]].tolist(),
                strict=True,
            )
        )
        base = bounds[0]
        rows = [entries[lo - base : hi - base] for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
        return BatchPlan(width=int(self.batch_width[b]), rows=rows)


def check_batch_shape(max_length: int, tokens_per_batch: int) -> None:
    """Raise ValueError unless one row of ``max_length`` tokens fits the token budget."""
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    if tokens_per_batch < max_length:
        raise ValueError(
            f"tokens_per_batch {tokens_per_batch} is smaller than max_length {max_length}: "
            "not even one row fits the token budget"
        )


def check_long_sequences(policy: str, name: str = "long_sequences") -> None:
    """ValueError unless ``policy`` is a long-sequence policy (the config and the stream call this)."""
    if policy not in LONG_SEQUENCE_POLICIES:
        raise ValueError(f"{name} must be one of {LONG_SEQUENCE_POLICIES}, got {policy!r}")


def usable_sequences(lengths: np.ndarray, *, max_length: int, long_sequences: str) -> np.ndarray:
    """(n,) bool: the sequences an epoch trains on under the ``long_sequences`` policy.

    Empty sequences hold nothing to train on and are never used; under ``"drop"`` sequences longer
    than ``max_length`` are left out, under ``"crop"`` they are kept (and cropped when planned).
    """
    check_long_sequences(long_sequences)
    usable = lengths >= 1
    if long_sequences == "drop":
        usable &= lengths <= max_length
    return usable


def epoch_order(
    lengths: np.ndarray, *, max_length: int, long_sequences: str, seed: int, epoch: int
) -> np.ndarray:
    """Shuffled set indices of the sequences used in ``epoch``; depends on (seed, epoch) only.

    Which sequences are used is ``usable_sequences``.
    """
    usable = usable_sequences(lengths, max_length=max_length, long_sequences=long_sequences)
    # int32 halves the memory of the order for large sets (60M sequences: 240 MB instead of 480).
    index_dtype = np.int32 if len(lengths) < 2**31 else np.int64
    kept = np.flatnonzero(usable).astype(index_dtype)
    rng = np.random.default_rng([seed, epoch, _ORDER_STREAM])
    rng.shuffle(kept)
    return kept


def window_rng(seed: int, epoch: int, window: int) -> np.random.Generator:
    """The RNG of one planning window (crops, row and batch shuffles)."""
    return np.random.default_rng([seed, epoch, _WINDOW_STREAM, window])


def draw_crops(
    lengths: np.ndarray, max_length: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Crop windows (start, length) of at most ``max_length``, uniformly placed in long sequences.

    Sequences that fit are taken whole (start 0). Returns two (n,) int64 arrays.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    crop_length = np.minimum(lengths, max_length)
    # One draw per sequence (also for short ones, with high 1 -> 0) keeps the RNG use vectorised.
    crop_start = rng.integers(0, lengths - crop_length + 1, dtype=np.int64)
    return crop_start, crop_length


def best_fit_decreasing(lengths: np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """Pack items of the given lengths into as few rows of ``capacity`` as best-fit allows.

    Items are taken longest first; each goes into the open row with the least remaining room that
    still fits it, else a new row. Returns (order, row_offsets): the items of row r are
    ``order[row_offsets[r]:row_offsets[r + 1]]``, in the order they were placed.
    """
    sizes = np.asarray(lengths, dtype=np.int64)
    if len(sizes) and (sizes.min() < 1 or sizes.max() > capacity):
        raise ValueError(f"item lengths must be in [1, {capacity}], got [{sizes.min()}, {sizes.max()}]")
    open_room: list[int] = []  # sorted distinct remaining capacities that have an open row
    rows_with_room: dict[int, list[int]] = {}  # remaining capacity -> open rows (a stack)
    row_items: list[list[int]] = []
    size_list = sizes.tolist()
    for item in np.argsort(-sizes, kind="stable").tolist():
        need = size_list[item]
        slot = bisect.bisect_left(open_room, need)
        if slot == len(open_room):
            row = len(row_items)
            row_items.append([item])
            room = capacity - need
        else:
            room_before = open_room[slot]
            stack = rows_with_room[room_before]
            row = stack.pop()
            if not stack:
                del rows_with_room[room_before]
                open_room.pop(slot)
            row_items[row].append(item)
            room = room_before - need
        if room > 0:
            stack = rows_with_room.get(room)
            if stack is None:
                rows_with_room[room] = [row]
                bisect.insort(open_room, room)
            else:
                stack.append(row)
    row_offsets = np.zeros(len(row_items) + 1, dtype=np.int64)
    np.cumsum([len(items) for items in row_items], out=row_offsets[1:])
    order = np.fromiter((i for items in row_items for i in items), dtype=np.int64, count=len(size_list))
    return order, row_offsets


def _bucket_cuts(sorted_lengths: list[int], tokens_per_batch: int) -> list[int]:
    """Batch boundaries over ascending lengths so that rows * longest <= tokens_per_batch."""
    cuts = [0]
    rows = 0
    for j, length in enumerate(sorted_lengths):
        # Ascending order: the item being added is the longest, so it sets the padded width.
        if (rows + 1) * length > tokens_per_batch:
            cuts.append(j)
            rows = 0
        rows += 1
    cuts.append(len(sorted_lengths))
    return cuts


def plan_window(
    indices: np.ndarray,
    lengths: np.ndarray,
    *,
    max_length: int,
    tokens_per_batch: int,
    packing: bool,
    bucket_by_length: bool,
    rng: np.random.Generator,
) -> WindowPlan:
    """Plan the batches of one window of an epoch order.

    ``indices`` (n,) are set indices in shuffled order, ``lengths`` the full-length array of the
    set. Sequences longer than ``max_length`` get a fresh random crop from ``rng`` (the drop
    policy is applied earlier, by ``epoch_order``). ``bucket_by_length`` only affects unpacked mode.
    """
    check_batch_shape(max_length, tokens_per_batch)
    indices = np.asarray(indices, dtype=np.int64)
    crop_start, crop_length = draw_crops(lengths[indices], max_length, rng)
    rows_per_batch = tokens_per_batch // max_length
    if packing:
        order, row_offsets = best_fit_decreasing(crop_length, max_length)
        num_rows = len(row_offsets) - 1
        # Shuffle rows so batches mix long and short sequences from the whole window.
        row_perm = rng.permutation(num_rows)
        row_sizes = np.diff(row_offsets)[row_perm]
        # Entries of the shuffled rows, concatenated: gather each row's slice of ``order``.
        entry_rank = np.arange(int(row_sizes.sum())) - np.repeat(np.cumsum(row_sizes) - row_sizes, row_sizes)
        order = order[np.repeat(row_offsets[:-1][row_perm], row_sizes) + entry_rank]
        row_offsets = np.concatenate([[0], np.cumsum(row_sizes)])
        batch_offsets = np.append(np.arange(0, num_rows, rows_per_batch), num_rows)
        batch_width = np.full(len(batch_offsets) - 1, max_length, dtype=np.int64)
    else:
        num_rows = len(indices)
        row_offsets = np.arange(num_rows + 1, dtype=np.int64)
        if bucket_by_length:
            order = np.argsort(crop_length, kind="stable")
            cuts = np.asarray(_bucket_cuts(crop_length[order].tolist(), tokens_per_batch), dtype=np.int64)
            # Shuffle the batches so training does not see lengths in ascending order.
            batch_perm = rng.permutation(len(cuts) - 1)
            sizes = np.diff(cuts)[batch_perm]
            rank = np.arange(num_rows) - np.repeat(np.cumsum(sizes) - sizes, sizes)
            order = order[np.repeat(cuts[:-1][batch_perm], sizes) + rank]
            batch_offsets = np.concatenate([[0], np.cumsum(sizes)])
        else:
            order = np.arange(num_rows)
            batch_offsets = np.append(np.arange(0, num_rows, rows_per_batch), num_rows)
        ordered = crop_length[order]
        batch_width = np.maximum.reduceat(ordered, batch_offsets[:-1]) if num_rows else np.zeros(0, np.int64)
    return WindowPlan(
        set_index=indices[order],
        crop_start=crop_start[order],
        crop_length=crop_length[order],
        row_offsets=np.asarray(row_offsets, dtype=np.int64),
        batch_offsets=np.asarray(batch_offsets, dtype=np.int64),
        batch_width=np.asarray(batch_width, dtype=np.int64),
    )


def gather_arrays(
    sequences: SequenceSet, plan: BatchPlan, pad_id: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Copy the planned crops into compact (rows, width) numpy grids: tokens, segment ids, positions.

    One vectorised gather for the whole batch instead of a Python loop per sequence. The dtypes are
    the smallest that hold the values (uint8 tokens for the usual alphabet), which keeps the
    transfer from DataLoader workers cheap; ``batch_from_arrays`` widens them. Raises ValueError if
    a crop leaves its sequence, a row is empty or a row is wider than ``plan.width``.
    """
    num_rows, width = len(plan.rows), plan.width
    if num_rows == 0:
        raise ValueError("cannot materialise a batch plan with zero rows")
    row_sizes = np.fromiter((len(row) for row in plan.rows), dtype=np.int64, count=num_rows)
    if row_sizes.min() == 0:
        raise ValueError(f"batch plan row {int(np.argmin(row_sizes))} is empty")
    entries = np.array([entry for row in plan.rows for entry in row], dtype=np.int64)  # (E, 3)
    set_index, crop_start, crop_length = entries[:, 0], entries[:, 1], entries[:, 2]
    if set_index.min() < 0 or set_index.max() >= len(sequences):
        raise ValueError(f"batch plan refers to sequences outside [0, {len(sequences)})")
    seq_lengths = sequences.lengths[set_index]
    bad = (crop_start < 0) | (crop_length < 1) | (crop_start + crop_length > seq_lengths)
    if bad.any():
        e = int(np.argmax(bad))
        raise ValueError(
            f"crop [{crop_start[e]}, {crop_start[e] + crop_length[e]}) outside sequence {set_index[e]} "
            f"of length {seq_lengths[e]}"
        )
    row_of_entry = np.repeat(np.arange(num_rows), row_sizes)  # (E,)
    entry_end = np.cumsum(crop_length)
    entry_begin = entry_end - crop_length  # (E,) offset among all real tokens of the batch
    row_first = np.cumsum(row_sizes) - row_sizes  # (R,) first entry of each row
    col_begin = entry_begin - np.repeat(entry_begin[row_first], row_sizes)  # (E,) column in its row
    row_used = np.bincount(row_of_entry, weights=crop_length, minlength=num_rows)
    if row_used.max() > width:
        row = int(np.argmax(row_used))
        raise ValueError(f"batch plan row {row} holds {int(row_used[row])} tokens > width {width}")
    total = int(entry_end[-1])
    # Per real token: position inside its segment, then source and destination flat indices.
    within = np.arange(total) - np.repeat(entry_begin, crop_length)  # (T,)
    src = np.repeat(sequences.starts[set_index] + crop_start, crop_length) + within
    dst = np.repeat(row_of_entry * width + col_begin, crop_length) + within
    segment = np.repeat(np.arange(len(entries)) - np.repeat(row_first, row_sizes) + 1, crop_length)
    store_tokens = sequences.store.tokens
    token_dtype = np.promote_types(store_tokens.dtype, np.min_scalar_type(pad_id))
    index_dtype = np.min_scalar_type(width)  # positions < width, segment ids <= width
    tokens = np.full(num_rows * width, pad_id, dtype=token_dtype)
    tokens[dst] = store_tokens[src]
    segment_ids = np.zeros(num_rows * width, dtype=index_dtype)
    segment_ids[dst] = segment
    positions = np.zeros(num_rows * width, dtype=index_dtype)
    positions[dst] = within
    shape = (num_rows, width)
    return tokens.reshape(shape), segment_ids.reshape(shape), positions.reshape(shape)


def gather_labels(sequences: SequenceSet, plan: BatchPlan) -> np.ndarray | None:
    """The (rows, S + 1, K) label grid of a plan (``labels.label_grid``): each segment's label ids
    travel with its sequence, however it was packed. None when ``sequences`` carry no labels."""
    if sequences.labels is None:
        return None
    return label_grid([[sequences.label_ids(k) for k, _, _ in row] for row in plan.rows], len(plan.rows))


def batch_from_arrays(
    tokens: np.ndarray,
    segment_ids: np.ndarray,
    positions: np.ndarray,
    num_real_tokens: int,
    labels: np.ndarray | None = None,
) -> Batch:
    """Widen the compact grids of ``gather_arrays`` (and ``gather_labels``) to the Batch dtypes."""
    return Batch(
        torch.from_numpy(tokens.astype(np.int64)),
        torch.from_numpy(segment_ids.astype(np.int32)),
        torch.from_numpy(positions.astype(np.int64)),
        num_real_tokens=num_real_tokens,
        labels=None if labels is None else torch.from_numpy(labels.astype(np.int64)),
    )


def materialise(sequences: SequenceSet, plan: BatchPlan, pad_id: int) -> Batch:
    """The Batch of a plan: equivalent to ``Batch.from_packed_rows`` on the cropped sequences."""
    tokens, segment_ids, positions = gather_arrays(sequences, plan, pad_id)
    return batch_from_arrays(tokens, segment_ids, positions, plan.num_real_tokens, gather_labels(sequences, plan))
