"""Label conditioning: vocabulary, label sets through preparation and packing, label dropout,
per-segment conditioning of the model, guidance arithmetic, and conditional scoring on an oracle.

Sequences and labels here are synthetic (random residues, made-up label names) unless a test says
otherwise; the real embedded GO labels are exercised by the training tests.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from protlig_dd.config import DataConfig, LabelsConfig, ModelConfig
from protlig_dd.data.alphabet import Alphabet
from protlig_dd.data.batch import Batch
from protlig_dd.data.label_sources import LabelSourceError
from protlig_dd.data.labels import LabelSets, LabelVocabulary, UnknownLabelError, label_grid
from protlig_dd.data.loader import TrainBatchStream
from protlig_dd.data.pipeline import prepare_splits
from protlig_dd.data.sequence_set import InMemoryTokenStore, SequenceSet
from protlig_dd.diffusion.graphs import Absorbing, score_from_clean_log_probs
from protlig_dd.diffusion.guidance import Guidance, guided_log_probs, guided_log_scores
from protlig_dd.diffusion.noise import LogLinear
from protlig_dd.generation import generate
from protlig_dd.model.score_function import bound_batch
from protlig_dd.model.transformer import SEDDTransformer
from protlig_dd.training.label_dropout import LabelDropout

ALPHABET = Alphabet()
N = ALPHABET.num_residues
PAD = ALPHABET.pad_id


# ------------------------------------------------------------------------------------ vocabulary


def test_vocabulary_keeps_frequent_labels_most_frequent_first_and_encodes_known_ones() -> None:
    sets = [["a", "b"], ["a", "c"], ["a", "b", "b"], ["d"], ["b"]]  # b counted once per set
    vocabulary = LabelVocabulary.build(sets, min_count=2, max_labels=10)
    assert vocabulary.terms == ("a", "b") and vocabulary.counts == (3, 3)  # tie broken by name
    assert LabelVocabulary.build(sets, min_count=1, max_labels=2).terms == ("a", "b")
    assert vocabulary.encode(["c", "b", "a", "b"]) == [2, 1]  # unknown left out, first-seen order, unique
    assert LabelVocabulary.from_dict(vocabulary.to_dict()) == vocabulary


def test_vocabulary_closes_requests_upwards_when_training_added_ancestors() -> None:
    vocabulary = LabelVocabulary.build([["a", "p", "root"], ["b", "p", "root"]], min_count=1, max_labels=10)
    assert vocabulary.closed(["a"]) == ["a"]  # no ancestors recorded: the request as it is
    ancestors = {"a": frozenset({"p", "root", "rare"}), "b": frozenset({"p", "root"}), "p": frozenset({"root"})}
    closed = vocabulary.with_ancestors(ancestors)
    assert closed.closed(["a"]) == ["a", "p", "root"]  # "rare" is not in the vocabulary
    assert closed.closed(["p", "b"]) == ["p", "b", "root"]
    assert LabelVocabulary.from_dict(closed.to_dict()) == closed


def test_unknown_label_error_names_the_label_and_close_ones() -> None:
    vocabulary = LabelVocabulary(
        ("GO:0016021", "GO:0005524"), (5, 4), names={"GO:0016021": "integral component of membrane"}
    )
    assert vocabulary.lookup("GO:0005524") == 2
    with pytest.raises(UnknownLabelError, match=r"unknown label 'GO:0016012'.*close ones: GO:0016021 \(integral"):
        vocabulary.lookup("GO:0016012")
    with pytest.raises(UnknownLabelError, match="close ones: GO:0016021"):
        vocabulary.lookup("integral component of membran")  # by name


# ------------------------------------------------------------------------- preparation and cache


def _write_fasta(path: Path, count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    ids = [f"P{i:05d}" for i in range(count)]
    with gzip.open(path, "wt") as handle:
        for name in ids:
            handle.write(f">{name}\n{''.join(rng.choice(list(ALPHABET.residues[:20]), 40))}\n")
    return ids


def _write_table(path: Path, ids: list[str]) -> None:
    rows = ["accession\tontology\tgo_terms"]
    for i, name in enumerate(ids):
        terms = ["GO:1"] + (["GO:2"] if i % 2 else []) + ([f"GO:rare{i}"] if i % 7 == 0 else [])
        rows.append(f"{name}\tmolecular_function\t{';'.join(terms)}")
    path.write_text("\n".join(rows) + "\n")


def test_vocabulary_is_built_from_training_ids_stored_with_the_cache_and_reused(tmp_path: Path) -> None:
    ids = _write_fasta(tmp_path / "seqs.fasta.gz", 200, seed=0)
    _write_table(tmp_path / "go.tsv", ids)
    data = DataConfig(source=str(tmp_path / "seqs.fasta.gz"), validation_fraction=0.2)
    labels = LabelsConfig(source=str(tmp_path / "go.tsv"), min_count=3)
    splits = prepare_splits(data, ALPHABET, tmp_path / "cache", progress=False, labels_cfg=labels)
    vocabulary = LabelVocabulary.from_dict(splits.summary.labels)
    assert vocabulary.terms[:2] == ("GO:1", "GO:2") and not any(t.startswith("GO:rare") for t in vocabulary.terms)
    assert vocabulary.counts[0] == len(splits.train)  # built from the training split only
    for part in (splits.train, splits.validation):
        for k in range(len(part)):
            index = int(part.sequence_id(k)[1:])
            assert part.label_ids(k) == ([1, 2] if index % 2 else [1])
    stored = [p for p in (tmp_path / "cache").iterdir() if p.name.startswith("labels-")]
    assert len(stored) == 1 and (stored[0] / "meta.json").is_file()
    stamp = (stored[0] / "meta.json").stat().st_mtime_ns
    again = prepare_splits(data, ALPHABET, tmp_path / "cache", progress=False, labels_cfg=labels)
    assert (stored[0] / "meta.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert again.summary.labels == splits.summary.labels
    # A resumed run passes its checkpoint's vocabulary: the ids keep their meaning.
    kept = LabelVocabulary(("GO:2", "GO:1"), (1, 1))
    resumed = prepare_splits(
        data, ALPHABET, tmp_path / "cache", progress=False, labels_cfg=labels, label_vocabulary=kept
    )
    assert resumed.summary.labels["terms"] == ["GO:2", "GO:1"]
    for k in range(len(resumed.train)):
        odd = int(resumed.train.sequence_id(k)[1:]) % 2
        assert resumed.train.label_ids(k) == ([2, 1] if odd else [2])  # GO:1 is id 2, GO:2 id 1 now


def test_labels_from_a_fasta_header_field(tmp_path: Path) -> None:
    """UniRef-style headers (synthetic sequences): TaxID=... becomes each sequence's label."""
    rng = np.random.default_rng(2)
    lines = []
    for i in range(60):
        taxon = ("9606", "10090", "562")[i % 3]
        seq = "".join(rng.choice(list(ALPHABET.residues[:20]), 30))
        lines += [f">UniRef50_X{i} Some protein n=2 Tax=Some organism TaxID={taxon} RepID=X{i}", seq]
    (tmp_path / "uniref.fasta").write_text("\n".join(lines) + "\n")
    data = DataConfig(source=str(tmp_path / "uniref.fasta"), validation_fraction=0.1)
    labels = LabelsConfig(source="header:TaxID", min_count=1)
    splits = prepare_splits(data, ALPHABET, tmp_path / "cache", progress=False, labels_cfg=labels)
    vocabulary = LabelVocabulary.from_dict(splits.summary.labels)
    assert set(vocabulary.terms) == {"9606", "10090", "562"}
    for k in range(len(splits.train)):
        i = int(splits.train.sequence_id(k).removeprefix("UniRef50_X"))
        assert splits.train.label_ids(k) == [vocabulary.lookup(("9606", "10090", "562")[i % 3])]


def test_a_label_table_matching_no_sequence_is_an_error_naming_it(tmp_path: Path) -> None:
    _write_fasta(tmp_path / "seqs.fasta.gz", 20, seed=1)
    _write_table(tmp_path / "other.tsv", [f"Q{i}" for i in range(20)])
    data = DataConfig(source=str(tmp_path / "seqs.fasta.gz"))
    labels = LabelsConfig(source=str(tmp_path / "other.tsv"), min_count=1)
    with pytest.raises(LabelSourceError, match=r"other\.tsv.*no id .* matches a training sequence"):
        prepare_splits(data, ALPHABET, tmp_path / "cache", progress=False, labels_cfg=labels)


# ------------------------------------------------------------------------------------- packing


def test_packing_keeps_each_segments_labels_with_it() -> None:
    rng = np.random.default_rng(3)
    sequences = [rng.integers(0, 20, rng.integers(5, 90)).astype(np.uint8) for _ in range(300)]
    # Each sequence's labels are a function of its own content: its first residue and its length.
    sets = [[int(s[0]) + 1, 30 + len(s) % 7] for s in sequences]
    store = InMemoryTokenStore.from_arrays(sequences)
    data = SequenceSet.whole(store, LabelSets.from_lists(sets))
    stream = TrainBatchStream(
        data,
        max_length=128,
        tokens_per_batch=1024,
        packing=True,
        long_sequences="crop",
        bucket_by_length=True,
        pad_id=PAD,
        seed=5,
        window_size=100,
    )
    checked = 0
    for _ in range(30):
        batch = next(stream)
        plan = stream.last_plan
        assert batch.labels is not None
        for r, row in enumerate(plan.rows):
            assert (batch.labels[r, 0] == 0).all()  # padding's slot stays empty
            for s, (k, _, _) in enumerate(row, start=1):
                got = [int(i) for i in batch.labels[r, s] if i]
                assert got == sets[k]
                first = int(batch.tokens[r][batch.segment_ids[r] == s][0]) if plan.rows[r][s - 1][1] == 0 else None
                if first is not None:
                    assert got[0] == first + 1
                checked += 1
    assert checked > 100


def test_label_grid_layout() -> None:
    grid = label_grid([[[3, 4], []], [[5]]], 2)
    assert grid.shape == (2, 3, 2)
    assert grid.tolist() == [[[0, 0], [3, 4], [0, 0]], [[0, 0], [5, 0], [0, 0]]]


# -------------------------------------------------------------------------------- label dropout


def _labelled_batch(rows: int, segments: int, width: int, seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(1, 50, (rows, segments + 1, width), generator=g)
    labels[:, 0] = 0
    sizes = torch.randint(1, width + 1, (rows, segments + 1), generator=g)
    labels = labels * (torch.arange(width)[None, None, :] < sizes[..., None])
    tokens = torch.zeros(rows, 8, dtype=torch.long)
    return Batch(tokens, torch.ones(rows, 8, dtype=torch.int32), torch.zeros(rows, 8, dtype=torch.long), labels=labels)


def test_label_dropout_rate_and_determinism() -> None:
    batch = _labelled_batch(400, 5, 6, seed=0)
    dropped = LabelDropout(0.3, random_subsets=False)(batch, seed=11)
    assert torch.equal(dropped.labels, LabelDropout(0.3, random_subsets=False)(batch, seed=11).labels)
    emptied = ((dropped.labels[:, 1:] == 0).all(-1)).float().mean().item()
    segments = 400 * 5
    assert abs(emptied - 0.3) < 4 * math.sqrt(0.3 * 0.7 / segments)
    kept = ~(dropped.labels[:, 1:] == 0).all(-1)
    assert torch.equal(dropped.labels[:, 1:][kept], batch.labels[:, 1:][kept])  # kept sets are whole
    assert not torch.equal(dropped.labels, LabelDropout(0.3, False)(batch, seed=12).labels)


def test_random_subsets_keep_a_nonempty_subset_of_every_kept_set() -> None:
    batch = _labelled_batch(300, 4, 8, seed=1)
    thinned = LabelDropout(0.0, random_subsets=True)(batch, seed=3).labels
    original = batch.labels
    present = original != 0
    assert ((thinned == original) | (thinned == 0)).all()  # a subset, in place
    assert ((thinned != 0).any(-1) == present.any(-1)).all()  # no labelled set becomes empty
    kept_fraction = (thinned != 0).sum().item() / present.sum().item()
    assert 0.45 < kept_fraction < 0.85  # mean keep rate 1/2, plus the rescued singletons


# --------------------------------------------------------------------------------------- model


def _labelled_model(num_labels: int = 6, time_conditioning: bool = False) -> SEDDTransformer:
    cfg = ModelConfig(
        hidden_size=32,
        num_heads=2,
        num_blocks=2,
        cond_dim=16,
        max_length=64,
        dropout=0.0,
        time_conditioning=time_conditioning,
        local_mixing_kernel=3,
    )
    torch.manual_seed(0)
    model = SEDDTransformer(cfg, N, absorbing=True, num_labels=num_labels).eval()
    with torch.no_grad():  # adaLN-Zero starts label-blind: give the modulation weights some size
        for name, p in model.named_parameters():
            if "adaLN" in name or "final.linear" in name:
                p.normal_(0.0, 0.2)
    return model


@pytest.mark.parametrize("time_conditioning", [False, True])
def test_packed_segments_are_conditioned_on_their_own_labels(time_conditioning: bool) -> None:
    model = _labelled_model(time_conditioning=time_conditioning)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, N, 11), rng.integers(0, N, 9)
    sigma = torch.tensor([0.7])
    packed = Batch.from_packed_rows([[a, b]], PAD, length=24, label_sets=[[[1, 2], [5]]])
    out = model(packed.tokens, sigma, packed.segment_ids, packed.positions, packed.labels)
    for seq, labels, cols in ((a, [1, 2], slice(0, 11)), (b, [5], slice(11, 20))):
        alone = Batch.from_sequences([seq], PAD, label_sets=[labels])
        ref = model(alone.tokens, sigma, None, None, alone.labels)
        torch.testing.assert_close(out[0, cols], ref[0], atol=1e-5, rtol=1e-5)
    other = model(
        packed.tokens,
        sigma,
        packed.segment_ids,
        packed.positions,
        packed.with_labels(torch.tensor([[[0, 0], [5, 0], [1, 2]]])).labels,
    )
    assert not torch.allclose(other[0, :11], out[0, :11])  # the labels matter


def test_empty_label_sets_are_the_no_label_model() -> None:
    model = _labelled_model()
    tokens = torch.randint(0, N + 1, (3, 12), generator=torch.Generator().manual_seed(2))
    plain = model(tokens, torch.ones(3))
    empty = model(tokens, torch.ones(3), labels=torch.zeros(3, 2, 4, dtype=torch.long))
    assert torch.equal(plain, empty)
    unlabelled = SEDDTransformer(model.cfg, N, absorbing=True)
    with pytest.raises(ValueError, match="trained without labels"):
        unlabelled(tokens, torch.ones(3), labels=torch.zeros(3, 2, 1, dtype=torch.long))


# ------------------------------------------------------------------------------------- guidance


def test_guidance_arithmetic_against_a_hand_computed_case() -> None:
    conditional = torch.log(torch.tensor([[[0.8, 0.2]]]))
    unconditional = torch.log(torch.tensor([[[0.5, 0.5]]]))
    # W = 1: p ~ c^2 / u = (1.28, 0.08) -> (16/17, 1/17).
    guided = guided_log_probs(conditional, unconditional, torch.tensor([1.0])).exp()
    torch.testing.assert_close(guided, torch.tensor([[[16 / 17, 1 / 17]]]))
    torch.testing.assert_close(guided_log_probs(conditional, unconditional, torch.tensor([0.0])), conditional)
    scores = guided_log_scores(torch.tensor([[[0.0, 1.0]]]), torch.tensor([[[0.0, 0.25]]]), torch.tensor([2.0]))
    torch.testing.assert_close(scores, torch.tensor([[[0.0, 2.5]]]))
    late = Guidance(3.0, "late").weight_at(torch.tensor([0.0, math.log(2.0), 50.0]))
    torch.testing.assert_close(late, torch.tensor([3.0, 1.5, 0.0]))
    assert not Guidance(0.0).active
    with pytest.raises(ValueError, match="schedule"):
        Guidance(1.0, "early")


@pytest.mark.parametrize("time_conditioning", [False, True])
def test_guided_sampling_round_trips_and_w0_without_labels_is_unconditional(time_conditioning: bool) -> None:
    model = _labelled_model(time_conditioning=time_conditioning)
    graph, noise = Absorbing(N), LogLinear(1e-3)
    lengths = [10, 14, 7]

    def run(labels, guidance, seed=4):
        return generate(
            model,
            graph,
            noise,
            ALPHABET,
            lengths=lengths,
            steps=12,
            labels=labels,
            guidance=guidance,
            generator=torch.Generator().manual_seed(seed),
        ).tokens

    unconditional = run(None, None)
    assert torch.equal(run([[], [], []], Guidance(0.0)), unconditional)  # bit for bit
    guided = run([[2, 3]] * 3, Guidance(2.0))
    assert torch.equal(run([[2, 3]] * 3, Guidance(2.0)), guided)  # same seed, labels and weight
    assert not torch.equal(guided, unconditional)
    late = run([[2, 3]] * 3, Guidance(2.0, "late"))
    assert torch.equal(run([[2, 3]] * 3, Guidance(2.0, "late")), late)
    with pytest.raises(ValueError, match="guidance needs labels"):
        run(None, Guidance(1.0))


def test_guided_sampling_with_cache_equals_without() -> None:
    model = _labelled_model()
    graph, noise = Absorbing(N), LogLinear(1e-3)
    out = [
        generate(
            model,
            graph,
            noise,
            ALPHABET,
            lengths=[12, 9],
            steps=40,
            labels=[[1], [4, 5]],
            guidance=Guidance(1.5, "late"),
            cache=cache,
            generator=torch.Generator().manual_seed(1),
        )
        for cache in (True, False)
    ]
    assert torch.equal(out[0].tokens, out[1].tokens)
    assert (out[0].network_passes < out[1].network_passes).all()


# ---------------------------------------------------------------------- conditional scoring oracle


class _OracleModel(torch.nn.Module):
    """The exact time-agnostic denoiser of a toy distribution where the label decides the sequence
    distribution: given label l, residues are i.i.d. from q_l (so p(x0_i | unmasked, l) = q_l)."""

    time_conditioning = False

    def __init__(self, q: torch.Tensor) -> None:
        super().__init__()
        self.q = q  # (num_labels + 1, N): row 0 unused, rows 1.. the label distributions
        self.num_residues = N

    def forward(self, tokens, sigma_bar, segment_ids=None, positions=None, labels=None):
        label = labels[:, 1, 0]  # one sequence per row, one label each
        log_p = self.q[label].log()[:, None, :].expand(*tokens.shape, N)
        return score_from_clean_log_probs(log_p, tokens, sigma_bar.float(), N)


def test_conditional_bound_approaches_the_known_entropy_on_an_oracle() -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.zeros(3, N)
    q[1, :4] = torch.tensor([0.7, 0.1, 0.1, 0.1])  # label 1: mostly A
    q[2, 4:8] = 0.25  # label 2: four other residues, uniform
    entropy = {k: float(-(q[k][q[k] > 0] * q[k][q[k] > 0].log()).sum()) for k in (1, 2)}
    model = _OracleModel(q)
    graph, noise = Absorbing(N), LogLinear(1e-4)
    for label in (1, 2):
        rows = torch.multinomial(q[label], 64 * 48, replacement=True, generator=g).view(64, 48)
        batch = Batch.from_sequences(list(rows.numpy()), PAD, label_sets=[[label]] * 64)
        bounds = bound_batch(model, graph, noise, batch, 8, "fp32", torch.device("cpu"), generator=g)
        per_residue = bounds.bound / 48
        mean, se = float(per_residue.mean()), float(per_residue.std() / math.sqrt(64))
        assert abs(mean - entropy[label]) < 4 * se + 0.01, (label, mean, entropy[label], se)
    # Under the other label the sequences of label 1 are impossible: the bound is far above.
    rows = torch.multinomial(q[1], 8 * 48, replacement=True, generator=g).view(8, 48)
    wrong = Batch.from_sequences(list(rows.numpy()), PAD, label_sets=[[2]] * 8)
    q[2] = q[2].clamp_min(1e-6)
    wrong_bound = bound_batch(model, graph, noise, wrong, 4, "fp32", torch.device("cpu"), generator=g).bound
    assert float(wrong_bound.mean()) / 48 > 5


def test_guided_sampling_keeps_template_residues() -> None:
    from protlig_dd.diffusion.templates import templates_from_strings

    model = _labelled_model()
    templates = templates_from_strings(["MKT______GGS", "____W____"], ALPHABET, 64)
    out = generate(
        model,
        Absorbing(N),
        LogLinear(1e-3),
        ALPHABET,
        templates=templates,
        steps=10,
        labels=[[2], [2]],
        guidance=Guidance(3.0),
        generator=torch.Generator().manual_seed(0),
    )
    first, second = out.sequences
    assert first.startswith("MKT") and first.endswith("GGS") and len(first) == 12 and "_" not in first
    assert second[4] == "W" and len(second) == 9
