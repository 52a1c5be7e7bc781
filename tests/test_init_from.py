"""Fine-tuning with --init-from (issue 14): a new run from a model's weights, checked architecture,
provenance in the config, meta.json and the model card of its export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_CONFIG

from protlig_dd import export
from protlig_dd.inference import load_model
from protlig_dd.model_folder import CARD_FILE, WEIGHTS_FILE
from protlig_dd.training import checkpoint as ckpt
from protlig_dd.training import run_train_uniref50_optimized as train_cli

QUIET = ["eval.every=0", "sampling.every=0", "training.max_steps=2", "checkpoint.every=2"]


def _train(work_dir: Path, cache: Path, *args: str, config: Path | None = TINY_CONFIG, extra: tuple = ()) -> int:
    """The training entry point on the tiny config with the shared data cache (and ``extra`` --set items)."""
    head = ["--work_dir", str(work_dir), "--device", "cpu"] + (["--config", str(config)] if config else [])
    return train_cli.main([*head, *args, "--set", f"data.cache_dir={cache}", *QUIET, *extra])


def _latest(work_dir: Path) -> Path:
    return ckpt.resolve_checkpoint(work_dir)


def _log(work_dir: Path) -> str:
    return (work_dir / "train.log").read_text()


def test_new_run_starts_from_the_weights(tiny_run: Path, tmp_path: Path, shared_cache_dir: Path) -> None:
    """With another seed (another random initialisation) and a learning rate too small to move
    anything, the fine-tuned run's weights and EMA are the model's; the step counter and optimizer
    start anew (step 2 after 2 steps, not 4); config.yaml and meta.json record where the run started."""
    start = load_model(tiny_run, device="cpu", precision="fp32").model.state_dict()
    work = tmp_path / "ft"
    assert _train(work, shared_cache_dir, "--init-from", str(tiny_run), "--seed", "7", extra=("optim.lr=1e-12",)) == 0
    folder = _latest(work)
    state = ckpt.load_file(folder / "model.pt")
    for name, tensor in start.items():
        assert torch.allclose(state["model"][name], tensor, atol=1e-6), name
        assert torch.allclose(state["ema"]["shadow"][name], tensor, atol=1e-6), name
    meta = ckpt.read_meta(folder)
    assert meta["train_state"]["step"] == 2
    optimizer_steps = {int(s["step"]) for s in ckpt.load_file(folder / "train_state.pt")["optimizer"]["state"].values()}
    assert optimizer_steps == {2}
    assert yaml.safe_load((work / "config.yaml").read_text())["training"]["init_from"] == str(tiny_run)
    origin = meta["initialized_from"]
    assert origin["model"] == str(tiny_run) and origin["step"] == 2 and origin["weights"] == "ema"
    assert origin["kind"] == "checkpoint"


def test_a_random_start_differs(tmp_path: Path, tiny_run: Path, shared_cache_dir: Path) -> None:
    """The control of the test above: the same tiny lr without --init-from keeps a random initialisation."""
    start = load_model(tiny_run, device="cpu", precision="fp32").model.state_dict()
    assert _train(tmp_path / "scratch", shared_cache_dir, "--seed", "7", extra=("optim.lr=1e-12",)) == 0
    weights = ckpt.load_file(_latest(tmp_path / "scratch") / "model.pt")["model"]
    assert not torch.allclose(weights["blocks.0.attn_qkv.weight"], start["blocks.0.attn_qkv.weight"], atol=1e-3)
    assert "initialized_from" not in ckpt.read_meta(_latest(tmp_path / "scratch"))


def test_max_length_and_dropout_may_differ(tiny_run: Path, tmp_path: Path, shared_cache_dir: Path) -> None:
    """model.max_length and model.dropout are not architecture: rows of 32 and no dropout fine-tune a
    model trained on rows of 64 with dropout 0.1."""
    work = tmp_path / "ft"
    code = _train(
        work, shared_cache_dir, "--init-from", str(tiny_run), extra=("model.max_length=32", "model.dropout=0.0")
    )
    assert code == 0, _log(work)
    assert ckpt.read_config(_latest(work)).model.max_length == 32


def test_mismatched_architecture_exits_2_naming_the_key(tiny_run: Path, tmp_path: Path, shared_cache_dir: Path) -> None:
    """A config of another hidden size is refused before any data work (exit 2, the key named, nothing
    trained); --set model.hidden_size making them match lets it run."""
    wide = tmp_path / "wide.yaml"
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["model"]["hidden_size"] = 48
    wide.write_text(yaml.safe_dump(config))
    work = tmp_path / "ft"
    assert _train(work, shared_cache_dir, "--init-from", str(tiny_run), config=wide) == 2
    assert "model.hidden_size: model 32, config 48" in _log(work)
    assert ckpt.latest_checkpoint(work) is None
    code = _train(work, shared_cache_dir, "--init-from", str(tiny_run), config=wide, extra=("model.hidden_size=32",))
    assert code == 0, _log(work)


def test_without_config_the_models_own_config_is_used(tiny_run: Path, tmp_path: Path, shared_cache_dir: Path) -> None:
    """--init-from without --config starts from the model's config (its data cache folder reset; --set
    still applies)."""
    work = tmp_path / "ft"
    assert _train(work, shared_cache_dir, "--init-from", str(tiny_run), config=None) == 0, _log(work)
    saved = ckpt.read_config(_latest(work))
    assert saved.model == ckpt.read_config(_latest(tiny_run)).model
    assert saved.data.cache_dir == str(shared_cache_dir) and saved.training.init_from == str(tiny_run)


def test_rerun_resumes_instead_of_restarting(tiny_run: Path, tmp_path: Path, shared_cache_dir: Path) -> None:
    """Running the same --init-from command again continues the fine-tuning run from its checkpoint
    (init_from is used only when a run starts), and the provenance stays in later checkpoints."""
    work = tmp_path / "ft"
    assert _train(work, shared_cache_dir, "--init-from", str(tiny_run)) == 0
    assert _train(work, shared_cache_dir, "--init-from", str(tiny_run), extra=("training.max_steps=4",)) == 0
    meta = ckpt.read_meta(_latest(work))
    assert meta["train_state"]["step"] == 4 and meta["initialized_from"]["model"] == str(tiny_run)
    assert "resumed from" in _log(work)


def test_init_from_with_resume_is_refused(tiny_run: Path, tmp_path: Path, shared_cache_dir: Path) -> None:
    """--init-from starts a run: combined with --resume it is an error (exit 2)."""
    work = tmp_path / "ft"
    assert _train(work, shared_cache_dir, "--init-from", str(tiny_run), "--resume") == 2
    assert "cannot be combined with --resume" in _log(work)


def test_export_init_and_fine_tuned_card(tiny_run: Path, tmp_path: Path, shared_cache_dir: Path) -> None:
    """An export folder works as --init-from; the export of the fine-tuned run says on its card and in
    config.json that it was fine-tuned from it; a corrupt model.safetensors exits 2 naming the file."""
    base = tmp_path / "base"
    assert export.main(["--checkpoint", str(tiny_run), "--out", str(base), "--device", "cpu", "--no-evaluation"]) == 0
    work = tmp_path / "ft"
    assert _train(work, shared_cache_dir, "--init-from", str(base)) == 0
    out = tmp_path / "ft_export"
    assert export.main(["--checkpoint", str(work), "--out", str(out), "--device", "cpu", "--no-evaluation"]) == 0
    assert f"Fine-tuned from `{base}`" in (out / CARD_FILE).read_text()
    config = json.loads((out / "config.json").read_text())
    assert config["initialized_from"]["model"] == str(base) and config["initialized_from"]["kind"] == "export"
    broken = shutil.copytree(base, tmp_path / "broken")
    (broken / WEIGHTS_FILE).write_bytes(b"\x00" * 16)
    assert _train(tmp_path / "ft2", shared_cache_dir, "--init-from", str(broken)) == 2
    assert str(broken / WEIGHTS_FILE) in _log(tmp_path / "ft2")


@pytest.mark.parametrize("missing", ["someone/../bad", "no/such/run/dir"])
def test_missing_model_exits_2(missing: str, tmp_path: Path, shared_cache_dir: Path) -> None:
    """A model that is neither a local folder nor a Hub id is a one-line error naming it (exit 2)."""
    work = tmp_path / "ft"
    assert _train(work, shared_cache_dir, "--init-from", missing) == 2
    assert f"checkpoint not found: {missing}" in _log(work)
