"""Export and load by name (issue 14): the Hub-layout folder alone reproduces the run, holds no
pickle, loads by repo id from an offline Hub cache, and bad or missing models exit 2 naming them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, train_tiny_run
from safetensors.torch import load_file

from protlig_dd import export, hub, sample
from protlig_dd.inference import load_model
from protlig_dd.model_folder import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE
from protlig_dd.scoring import score_sequences

HELD_OUT = ["MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ", "MSTNPKPQRKTKRNTNRRPQDVKFPGG", "GSHMASMTGGQQMGRDLYDDDDK"]
FAKE_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _export(checkpoint: Path, out: Path, *extra: str) -> int:
    args = ["--checkpoint", str(checkpoint), "--out", str(out), "--device", "cpu", "--precision", "fp32"]
    return export.main([*args, "--max-heldout-sequences", "4", "--samples-per-seq", "2", *extra])


def _fingerprint(path: Path | str) -> tuple[list[str], list[float]]:
    """Sampled sequences and per-sequence bounds of a model for fixed seeds."""
    loaded = load_model(path, device="cpu", precision="fp32")
    sequences = loaded.sample(lengths=[12, 30, 7], steps=4, seed=3).sequences
    report = score_sequences(loaded, HELD_OUT, samples_per_sequence=4, seed=1)
    return sequences, [s.nll for s in report.scores]


def _sample_args(checkpoint: str, out: Path) -> list[str]:
    """Arguments of the sample CLI: 3 sequences of 15 residues, 4 steps, seed 0."""
    return ["--checkpoint", checkpoint, "--num", "3", "--length", "15", "--steps", "4", "--device", "cpu",
            "--precision", "fp32", "--out", str(out)]  # fmt: skip


def _sequences(fasta: Path) -> list[str]:
    return [line for line in fasta.read_text().splitlines() if not line.startswith(">")]


def populate_hub_cache(cache: Path, repo_id: str, folder: Path, commit: str = FAKE_COMMIT) -> None:
    """Lay ``folder`` out as the Hub cache holds a downloaded model repo: snapshots/<commit>/ and
    refs/main naming the commit (what snapshot_download reads offline)."""
    repo_dir = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo_dir / "snapshots" / commit)
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(commit)  # no newline: the Hub writes the bare hash


def offline_env(cache: Path) -> dict[str, str]:
    """The environment of a process that may only read the Hub cache at ``cache`` (never the network)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(cache.parent / "hf_home"))
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture(scope="module")
def exported(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An export of the shared tiny run."""
    out = tmp_path_factory.mktemp("export") / "tiny-model"
    assert _export(tiny_run, out) == 0
    return out


def test_export_alone_samples_and_scores_like_the_run(tiny_run: Path, tmp_path: Path) -> None:
    """The exported folder, copied elsewhere with the run directory and the export deleted, samples the
    same sequences and scores the same bounds as the run it came from, for the same seeds."""
    run = shutil.copytree(tiny_run, tmp_path / "run")
    expected = _fingerprint(run)
    assert _export(run, tmp_path / "export") == 0
    moved = shutil.copytree(tmp_path / "export", tmp_path / "elsewhere" / "model")
    shutil.rmtree(run)
    shutil.rmtree(tmp_path / "export")
    assert _fingerprint(moved) == expected


def test_time_agnostic_model_round_trips(tmp_path: Path, shared_cache_dir: Path) -> None:
    """config.json carries the parameterisation: a time-agnostic model exports and loads as one, with
    the same samples and bounds."""
    overrides = ["model.time_conditioning=false", "training.max_steps=2", "eval.every=0", "sampling.every=0"]
    run = train_tiny_run(tmp_path / "run", shared_cache_dir, overrides)
    expected = _fingerprint(run)
    assert _export(run, tmp_path / "export", "--no-evaluation") == 0
    config = json.loads((tmp_path / "export" / CONFIG_FILE).read_text())
    assert config["model"]["time_conditioning"] is False and "time-agnostic" in config["parameterisation"]
    assert load_model(tmp_path / "export", device="cpu").config.model.time_conditioning is False
    assert _fingerprint(tmp_path / "export") == expected


def test_export_holds_safetensors_config_and_card_and_no_pickle(exported: Path, tiny_run: Path) -> None:
    """Three files only; model.safetensors loads with safetensors.torch.load_file and holds the run's EMA
    weights; nothing is a pickle or a torch zip; config.json and the card say what the issue asks."""
    assert sorted(p.name for p in exported.iterdir()) == sorted([WEIGHTS_FILE, CONFIG_FILE, CARD_FILE])
    for path in exported.iterdir():
        head = path.read_bytes()[:2]
        assert head[:1] != b"\x80" and head != b"PK", f"{path.name} looks like a pickle or a torch zip"
    weights = load_file(str(exported / WEIGHTS_FILE))
    run_model = load_model(tiny_run, device="cpu", precision="fp32").model.state_dict()
    assert weights.keys() == run_model.keys()
    assert all(torch.equal(weights[k], run_model[k]) for k in weights)
    config = json.loads((exported / CONFIG_FILE).read_text())
    for key in ("model", "graph", "noise", "alphabet", "data_summary", "parameterisation", "protlig_dd_version"):
        assert key in config, key
    assert config["model"]["max_length"] == 64 and config["data_summary"]["length_histogram"]["lengths"]
    assert config["weights"] == "ema" and config["step"] == 2
    card = (exported / CARD_FILE).read_text()
    assert card.startswith("---\nlicense: cc-by-4.0\nlibrary_name: protlig_dd")
    for needle in (
        "Training data",
        "UniProt",
        "2 optimizer steps",
        "uniform-20",
        "Shuffled control",
        "reverse steps",
        "load_model(",
        "Not evaluated: structure",
    ):
        assert needle in card, needle


def test_raw_weights_export_the_trained_weights(tiny_run: Path, tmp_path: Path) -> None:
    """--raw-weights writes the trained (non-EMA) weights and says so in config.json and on the card."""
    assert _export(tiny_run, tmp_path / "raw", "--raw-weights", "--no-evaluation") == 0
    raw = load_model(tiny_run, device="cpu", use_ema=False).model.state_dict()
    weights = load_file(str(tmp_path / "raw" / WEIGHTS_FILE))
    assert all(torch.equal(weights[k], raw[k]) for k in raw)
    assert json.loads((tmp_path / "raw" / CONFIG_FILE).read_text())["weights"] == "trained"
    assert load_model(tmp_path / "raw", device="cpu").uses_ema is False
    assert "not the EMA" in (tmp_path / "raw" / CARD_FILE).read_text()


def test_push_to_hub_uploads_the_folder(exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--push-to-hub creates the repo and uploads the three files through huggingface_hub.HfApi (a fake
    here: the real Hub is never called in tests)."""
    calls = []

    class FakeApi:
        def __init__(self, token: str | None = None) -> None:
            calls.append(("init", token))

        def create_repo(self, repo_id: str, **kwargs: object) -> str:
            calls.append(("create", repo_id, kwargs["private"]))
            return f"https://hub.invalid/{repo_id}"

        def upload_folder(self, **kwargs: object) -> None:
            calls.append(("upload", kwargs["repo_id"], sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())))

    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    source = tmp_path / "src"
    shutil.copytree(exported, source)
    assert _export(source, tmp_path / "out", "--no-evaluation", "--push-to-hub", "someone/tiny", "--private") == 0
    assert calls[1] == ("create", "someone/tiny", True)
    assert calls[2] == ("upload", "someone/tiny", sorted([WEIGHTS_FILE, CONFIG_FILE, CARD_FILE]))
    assert 'load_model("someone/tiny")' in (tmp_path / "out" / CARD_FILE).read_text()


def test_repo_id_loads_from_an_offline_hub_cache(exported: Path, tmp_path: Path) -> None:
    """With HF_HUB_OFFLINE=1 and a pre-populated cache, --checkpoint user/name (and @commit) loads the
    cached export: the samples equal those of the local folder. No network is used."""
    cache = tmp_path / "hub"
    populate_hub_cache(cache, "someone/tiny-model", exported)
    local = tmp_path / "local.fasta"
    assert sample.main(_sample_args(str(exported), local)) == 0
    for name in ("someone/tiny-model", f"someone/tiny-model@{FAKE_COMMIT}"):
        out = tmp_path / f"{name.replace('/', '_')}.fasta"
        proc = subprocess.run(
            [sys.executable, "-m", "protlig_dd.sample", *_sample_args(name, out)],
            env=offline_env(cache),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        assert _sequences(out) == _sequences(local)
    resolved = hub.resolve_model(exported)
    assert resolved.kind == "export" and resolved.folder == exported


def test_missing_repo_id_exits_2_naming_it(tmp_path: Path) -> None:
    """An id that is not in the offline cache (nor a local folder) exits 2 with one line naming it."""
    cache = tmp_path / "hub"
    cache.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "protlig_dd.sample",
            "--checkpoint",
            "someone/absent-model",
            "--num",
            "1",
            "--out",
            str(tmp_path / "s.fasta"),
        ],
        env=offline_env(cache),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "someone/absent-model" in lines[0]
    assert "HF_HUB_OFFLINE" in lines[0] and "Traceback" not in proc.stderr


def test_corrupt_safetensors_exits_2_naming_the_file(
    exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A truncated or garbled model.safetensors is a one-line error naming the file (exit 2)."""
    broken = shutil.copytree(exported, tmp_path / "broken")
    data = (broken / WEIGHTS_FILE).read_bytes()
    for damaged in (data[:40], b"not a safetensors file" * 4):
        (broken / WEIGHTS_FILE).write_bytes(damaged)
        code = sample.main(["--checkpoint", str(broken), "--num", "1", "--out", str(tmp_path / "s.fasta")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and str(broken / WEIGHTS_FILE) in err[0]


@pytest.mark.parametrize(
    "reference, expected",
    [
        ("someone/model", ("someone/model", None)),
        ("someone/model@v1.2", ("someone/model", "v1.2")),
        ("some-one/my_model.v2@" + FAKE_COMMIT, ("some-one/my_model.v2", FAKE_COMMIT)),
        ("runs/a/b", None),
        ("/abs/path", None),
        ("model", None),
        ("someone/../x", None),
    ],
)
def test_repo_id_form(reference: str, expected: tuple[str, str | None] | None) -> None:
    """user/name[@revision] is a Hub id; paths with more parts, absolute paths and bare names are not."""
    assert hub.parse_repo_id(reference) == expected
