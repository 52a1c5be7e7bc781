"""Find a model by name: a local run dir, checkpoint folder or export folder, or a Hugging Face Hub
repo id; and publish an export folder to the Hub. All huggingface_hub use is here.

    resolve_model("runs/quickstart")                 # run dir: its latest complete checkpoint
    resolve_model("runs/quickstart/checkpoints/step_00003000")
    resolve_model("exports/quickstart")              # an export folder (config.json + model.safetensors)
    resolve_model("someone/protlig-small@v1")        # Hub repo id, optional @revision (branch, tag, commit)

A name that is a local path is always the local folder. Otherwise a name of the form ``user/name``
is fetched with ``huggingface_hub.snapshot_download`` into the standard Hub cache (``HF_HUB_CACHE``,
``HF_HOME``); with ``HF_HUB_OFFLINE=1`` only the cache is looked at. A model that cannot be found
is a CheckpointError naming it (the command lines exit with 2).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from protlig_dd.model_folder import CARD_FILE, CONFIG_FILE, WEIGHTS_FILE, is_model_folder
from protlig_dd.training.checkpoint import CheckpointError, resolve_checkpoint

logger = logging.getLogger(__name__)

# user/name with an optional @revision; the Hub allows letters, digits, '-', '_' and '.' in both parts.
_REPO_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")
MODEL_REFERENCE_HELP = (
    "run dir (latest checkpoint), checkpoint folder, export folder, or Hugging Face Hub repo id user/name[@revision]"
)


@dataclass(frozen=True)
class ModelSource:
    """Where a named model's files are on this machine."""

    reference: str  # the name as given
    folder: Path  # a checkpoint folder or an export folder
    kind: str  # "checkpoint" or "export"
    repo_id: str | None = None  # Hub models only
    revision: str | None = None  # Hub models: the commit the name resolved to

    def describe(self) -> dict[str, str | None]:
        """Plain data for provenance records (meta.json, config.json, model cards)."""
        return {
            "model": self.reference,
            "kind": self.kind,
            "folder": str(self.folder),
            "repo_id": self.repo_id,
            "revision": self.revision,
        }


def parse_repo_id(reference: str) -> tuple[str, str | None] | None:
    """(repo_id, revision or None) when ``reference`` has the form user/name[@revision], else None."""
    match = _REPO_ID.match(reference)
    if match is None or ".." in reference or "--" in match.group("repo"):
        return None
    return match.group("repo"), match.group("revision")


def resolve_model(reference: str | Path) -> ModelSource:
    """The local folder of a named model (see the module doc); CheckpointError names what is missing."""
    name = str(reference)
    path = Path(reference)
    if path.exists():
        if is_model_folder(path):
            return ModelSource(name, path, "export")
        return ModelSource(name, resolve_checkpoint(path), "checkpoint")
    parsed = parse_repo_id(name)
    if parsed is None:
        raise CheckpointError(f"checkpoint not found: {name}")
    repo_id, revision = parsed
    folder = Path(_download(name, repo_id, revision))
    if not is_model_folder(folder):
        raise CheckpointError(f"{name}: the Hub repository holds no {CONFIG_FILE} (not a protlig_dd export)")
    return ModelSource(name, folder, "export", repo_id=repo_id, revision=folder.name)


def _download(name: str, repo_id: str, revision: str | None) -> str:
    """snapshot_download of the export files; every failure becomes a CheckpointError naming ``name``."""
    from huggingface_hub import constants, snapshot_download

    try:
        return snapshot_download(repo_id, revision=revision, allow_patterns=[CONFIG_FILE, WEIGHTS_FILE, CARD_FILE])
    except (OSError, ValueError) as err:  # HTTP errors, not-found and offline misses are OSErrors
        where = "not in the local Hub cache (HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else "cannot be fetched"
        reason = " ".join(str(err).split())[:300]
        raise CheckpointError(
            f"model {name!r}: no local folder of that name, and the Hugging Face Hub model {repo_id!r}"
            f"{'' if revision is None else f' (revision {revision!r})'} {where}: {type(err).__name__}: {reason}"
        ) from None


def push_to_hub(folder: Path, repo_id: str, *, private: bool = False, token: str | None = None) -> str:
    """Upload an export folder to the Hub model repo ``repo_id`` (created if needed); returns its URL.

    Needs a write token: ``token``, or the one ``hf auth login`` stored / ``HF_TOKEN``.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    api.upload_folder(
        folder_path=str(folder),
        repo_id=repo_id,
        repo_type="model",
        allow_patterns=[CONFIG_FILE, WEIGHTS_FILE, CARD_FILE],
        commit_message="Upload protlig_dd model",
    )
    logger.info("uploaded %s to %s", folder, url)
    return str(url)
