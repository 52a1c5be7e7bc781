"""Batch planning and materialisation: crops, drop policy, packing, token budget, padding waste."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from real_data import real_sequence_set

from protlig_dd.data.alphabet import Alphabet
from protlig_dd.data.batch import Batch
from protlig_dd.data.batching import (
    BatchPlan,
    WindowPlan,
    best_fit_decreasing,
    draw_crops,
    epoch_order,
    materialise,
    plan_window,
    window_rng,
)
from protlig_dd.data.sequence_set import InMemoryTokenStore, SequenceSet

ALPHABET = Alphabet()
PAD = ALPHABET.pad_id


@pytest.fixture(scope="module")
def real_set() -> SequenceSet:
    """~1000 real UniRef50 sequences (lengths 24..6000+), encoded in memory."""
    return real_sequence_set(1000)


def synthetic_set(lengths: list[int], seed: int = 0) -> SequenceSet:
    """Random residues with the given lengths."""
    rng = np.random.default_rng(seed)
    seqs = [rng.integers(0, ALPHABET.num_residues, size=n, dtype=np.uint8) for n in lengths]
    return SequenceSet.whole(InMemoryTokenStore.from_arrays(seqs))


def plan_all(
    sequences: SequenceSet,
    *,
    max_length: int,
    tokens_per_batch: int,
    packing: bool,
    bucket_by_length: bool = True,
    long_sequences: str = "crop",
    epoch: int = 0,
) -> WindowPlan:
    order = epoch_order(sequences.lengths, max_length=max_length, long_sequences=long_sequences, seed=3, epoch=epoch)
    return plan_window(
        order,
        sequences.lengths,
        max_length=max_length,
        tokens_per_batch=tokens_per_batch,
        packing=packing,
        bucket_by_length=bucket_by_length,
        rng=window_rng(3, epoch, 0),
    )


def all_entries(plan: WindowPlan) -> list[tuple[int, int, int]]:
    return [entry for b in range(len(plan)) for row in plan.batch(b).rows for entry in row]


MODES = [
    pytest.param(True, True, id="packed"),
    pytest.param(False, True, id="bucketed"),
    pytest.param(False, False, id="plain"),
]


@pytest.mark.parametrize("packing,bucket", MODES)
def test_crops_stay_inside_sequences_and_cover_each_once(real_set: SequenceSet, packing: bool, bucket: bool) -> None:
    """Every crop lies inside its sequence, is max_length long when cropped; each sequence appears once."""
    plan = plan_all(real_set, max_length=128, tokens_per_batch=1024, packing=packing, bucket_by_length=bucket)
    entries = all_entries(plan)
    assert sorted(k for k, _, _ in entries) == list(range(len(real_set)))
    for k, start, length in entries:
        n = int(real_set.lengths[k])
        assert 0 <= start and start + length <= n
        assert length == min(n, 128)
        if n <= 128:
            assert start == 0


def test_crops_differ_across_epochs(real_set: SequenceSet) -> None:
    """A long sequence gets a fresh crop each epoch (drawn from the epoch's RNG), not one fixed window."""
    crops = []
    for epoch in range(3):
        plan = plan_all(real_set, max_length=64, tokens_per_batch=512, packing=True, epoch=epoch)
        crops.append({k: s for k, s, _ in all_entries(plan)})
    long_ids = np.flatnonzero(real_set.lengths > 64 + 10)
    assert len(long_ids) > 100
    for a, b in ((0, 1), (1, 2), (0, 2)):
        same = sum(crops[a][k] == crops[b][k] for k in long_ids)
        assert same < 0.2 * len(long_ids), f"epochs {a} and {b} share {same} crop starts"


def test_crop_starts_are_uniform_over_valid_range() -> None:
    """draw_crops places windows uniformly: both ends of a long sequence are reachable, none beyond."""
    rng = np.random.default_rng(0)
    lengths = np.full(20000, 110)
    start, length = draw_crops(lengths, 100, rng)
    assert (length == 100).all()
    counts = np.bincount(start, minlength=11)
    assert len(counts) == 11  # starts 0..10 only
    assert counts.min() > 1500


def test_drop_policy_removes_long_sequences_only(real_set: SequenceSet) -> None:
    """long_sequences='drop' leaves out exactly the sequences over max_length; 'crop' keeps every one."""
    dropped = epoch_order(real_set.lengths, max_length=200, long_sequences="drop", seed=0, epoch=0)
    assert sorted(dropped.tolist()) == np.flatnonzero(real_set.lengths <= 200).tolist()
    kept = epoch_order(real_set.lengths, max_length=200, long_sequences="crop", seed=0, epoch=0)
    assert sorted(kept.tolist()) == list(range(len(real_set)))
    plan = plan_all(real_set, max_length=200, tokens_per_batch=2048, packing=True, long_sequences="drop")
    entries = all_entries(plan)
    assert all(real_set.lengths[k] <= 200 and s == 0 for k, s, _ in entries)


def test_epoch_order_depends_on_seed_and_epoch_only() -> None:
    """The same (seed, epoch) gives the same order; another epoch or seed gives another."""
    lengths = np.arange(1, 501)
    a = epoch_order(lengths, max_length=100, long_sequences="crop", seed=5, epoch=2)
    assert np.array_equal(a, epoch_order(lengths, max_length=100, long_sequences="crop", seed=5, epoch=2))
    assert not np.array_equal(a, epoch_order(lengths, max_length=100, long_sequences="crop", seed=5, epoch=3))
    assert not np.array_equal(a, epoch_order(lengths, max_length=100, long_sequences="crop", seed=6, epoch=2))


def test_empty_sequences_are_never_planned() -> None:
    """A zero-length sequence has nothing to train on and would make an empty segment: it is skipped."""
    order = epoch_order(np.array([3, 0, 5]), max_length=4, long_sequences="crop", seed=0, epoch=0)
    assert sorted(order.tolist()) == [0, 2]


def test_bad_long_sequence_policy_is_rejected() -> None:
    """An unknown long-sequence policy is a ValueError naming it."""
    with pytest.raises(ValueError, match="truncate"):
        epoch_order(np.array([3]), max_length=4, long_sequences="truncate", seed=0, epoch=0)


def test_best_fit_decreasing_assigns_every_item_once_within_capacity() -> None:
    """Bin packing places each item exactly once and never overfills a row."""
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 101, size=3000)
    order, offsets = best_fit_decreasing(lengths, 100)
    assert sorted(order.tolist()) == list(range(3000))
    fill = np.add.reduceat(lengths[order], offsets[:-1])
    assert fill.max() <= 100
    # Near-optimal: within 2% of the lower bound sum / capacity.
    assert len(offsets) - 1 <= np.ceil(lengths.sum() / 100) * 1.02


def test_best_fit_decreasing_rejects_oversized_items() -> None:
    """An item larger than a row is a ValueError (cropping must happen before packing)."""
    with pytest.raises(ValueError, match="lengths must be in"):
        best_fit_decreasing(np.array([5, 11]), 10)


def test_packed_rows_fit_and_keep_sequences_contiguous(real_set: SequenceSet) -> None:
    """Packed rows never exceed max_length; each sequence is one contiguous segment with positions 0..n-1
    holding exactly its (cropped) residues."""
    plan = plan_all(real_set, max_length=256, tokens_per_batch=2048, packing=True)
    for b in range(len(plan)):
        batch_plan = plan.batch(b)
        batch = materialise(real_set, batch_plan, PAD)
        assert batch.tokens.shape == (len(batch_plan.rows), 256)
        seg = batch.segment_ids.numpy()
        pos = batch.positions.numpy()
        tok = batch.tokens.numpy()
        for r, row in enumerate(batch_plan.rows):
            assert sum(n for _, _, n in row) <= 256
            col = 0
            for s, (k, start, n) in enumerate(row, start=1):
                where = np.flatnonzero(seg[r] == s)
                assert where.tolist() == list(range(col, col + n))  # contiguous, in order
                assert pos[r, where].tolist() == list(range(n))  # positions restart at 0
                assert np.array_equal(tok[r, where], real_set.tokens(k, start, n))
                col += n
            assert (seg[r, col:] == 0).all() and (tok[r, col:] == PAD).all() and (pos[r, col:] == 0).all()


@pytest.mark.parametrize("packing,bucket", MODES)
def test_token_budget_is_respected(real_set: SequenceSet, packing: bool, bucket: bool) -> None:
    """rows * width <= tokens_per_batch for every batch, in every mode."""
    for budget in (512, 1000, 4096):
        plan = plan_all(real_set, max_length=512, tokens_per_batch=budget, packing=packing, bucket_by_length=bucket)
        for b in range(len(plan)):
            batch_plan = plan.batch(b)
            assert batch_plan.num_tokens <= budget
            assert all(sum(n for _, _, n in row) <= batch_plan.width for row in batch_plan.rows)


def test_packing_waste_below_5_percent_at_512(real_set: SequenceSet) -> None:
    """Packing ~1000 real UniRef50 sequences into rows of 512 wastes under 5% of tokens on padding."""
    plan = plan_all(real_set, max_length=512, tokens_per_batch=8192, packing=True)
    plans = [plan.batch(b) for b in range(len(plan))]
    real = sum(p.num_real_tokens for p in plans)
    grid = sum(p.num_tokens for p in plans)
    waste = 1 - real / grid
    assert waste < 0.05, f"padding waste {waste:.3%}"
    # The reported per-batch waste matches the batches actually built.
    batch = materialise(real_set, plans[0], PAD)
    assert plans[0].padding_waste == pytest.approx(1 - batch.num_real_tokens / batch.tokens.numel())


def test_bucketing_cuts_padding_compared_to_plain(real_set: SequenceSet) -> None:
    """Length bucketing in unpacked mode wastes far less than plain unpacked batches."""

    def waste(bucket: bool) -> float:
        plan = plan_all(real_set, max_length=512, tokens_per_batch=8192, packing=False, bucket_by_length=bucket)
        plans = [plan.batch(b) for b in range(len(plan))]
        return 1 - sum(p.num_real_tokens for p in plans) / sum(p.num_tokens for p in plans)

    bucketed, plain = waste(True), waste(False)
    assert bucketed < 0.1 and bucketed < plain / 4, (bucketed, plain)


def test_unpacked_batches_hold_one_sequence_per_row(real_set: SequenceSet) -> None:
    """Unpacked mode: one segment per row, width = longest crop of the batch."""
    plan = plan_all(real_set, max_length=300, tokens_per_batch=3000, packing=False, bucket_by_length=True)
    for b in range(len(plan)):
        batch_plan = plan.batch(b)
        assert all(len(row) == 1 for row in batch_plan.rows)
        assert batch_plan.width == max(row[0][2] for row in batch_plan.rows)
        batch = materialise(real_set, batch_plan, PAD)
        assert int(batch.segment_ids.max()) == 1


def test_materialise_equals_reference_from_packed_rows(real_set: SequenceSet) -> None:
    """The vectorised gather gives exactly Batch.from_packed_rows on the cropped sequences."""
    plan = plan_all(real_set, max_length=200, tokens_per_batch=1600, packing=True)
    for b in (0, 1, len(plan) - 1):
        batch_plan = plan.batch(b)
        fast = materialise(real_set, batch_plan, PAD)
        ref = Batch.from_packed_rows(
            [[real_set.tokens(k, s, n) for k, s, n in row] for row in batch_plan.rows], pad_id=PAD, length=200
        )
        assert torch.equal(fast.tokens, ref.tokens)
        assert torch.equal(fast.segment_ids, ref.segment_ids)
        assert torch.equal(fast.positions, ref.positions)
        assert fast.tokens.dtype == torch.int64 and fast.segment_ids.dtype == torch.int32
        assert fast.num_real_tokens == ref.num_real_tokens


def test_materialise_rejects_bad_plans() -> None:
    """A crop outside its sequence, an over-full row or an empty row is a ValueError, never a silent copy."""
    sequences = synthetic_set([10, 20])
    with pytest.raises(ValueError, match="outside sequence 0 of length 10"):
        materialise(sequences, BatchPlan(width=16, rows=[[(0, 5, 6)]]), PAD)
    with pytest.raises(ValueError, match="width 16"):
        materialise(sequences, BatchPlan(width=16, rows=[[(0, 0, 10), (1, 0, 7)]]), PAD)
    with pytest.raises(ValueError, match="empty"):
        materialise(sequences, BatchPlan(width=16, rows=[[(0, 0, 10)], []]), PAD)
    with pytest.raises(ValueError, match="outside"):
        materialise(sequences, BatchPlan(width=16, rows=[[(2, 0, 1)]]), PAD)


def test_budget_smaller_than_a_row_is_rejected() -> None:
    """tokens_per_batch below max_length cannot hold one row: ValueError naming both numbers."""
    with pytest.raises(ValueError, match="tokens_per_batch 100 is smaller than max_length 128"):
        plan_window(
            np.arange(3),
            np.array([5, 6, 7]),
            max_length=128,
            tokens_per_batch=100,
            packing=True,
            bucket_by_length=False,
            rng=np.random.default_rng(0),
        )


def test_config_uses_the_batching_policy_check() -> None:
    """data.long_sequences is validated by batching.check_long_sequences, the one list of policies
    (it was checked three times: config, stream and epoch order)."""
    from protlig_dd.config import DataConfig

    with pytest.raises(ValueError, match=r"data\.long_sequences must be one of \('crop', 'drop'\), got 'truncate'"):
        DataConfig(long_sequences="truncate")
