"""Resolving a model reference (hub id or local directory) to files on disk.

Hub downloads go through huggingface_hub, which honours HF_HOME, HF_HUB_CACHE and HF_HUB_OFFLINE.
The token is the caller's (Settings.hf_token); None leaves it to huggingface_hub's own login. vidore
publishes LoRA adapters: a directory with `adapter_config.json` whose `base_model_name_or_path` is
resolved too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pagelens.errors import ModelLoadError

CHECKPOINT_FILE_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """Where a model's files are: `weights_dir` holds config.json + weights of the (base) model,
    `adapter_dir` a LoRA adapter to merge on top (or None), `processor_dir` the processor files."""

    reference: str
    weights_dir: Path
    adapter_dir: Path | None
    processor_dir: Path
    config: dict[str, Any]


def fetch_to_directory(reference: str, revision: str | None = None, token: str | None = None) -> Path:
    """A local directory with the checkpoint's files: `reference` itself if it is one, else the hub cache."""
    as_path = Path(reference).expanduser()
    if as_path.is_dir():
        return as_path.resolve()
    if reference.startswith((".", "/", "~")) or reference.count("/") > 1:
        raise ModelLoadError(f"model directory {reference!r} does not exist")

    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(
            snapshot_download(reference, revision=revision, token=token, allow_patterns=CHECKPOINT_FILE_PATTERNS)
        )
    except LocalEntryNotFoundError as error:
        if constants.HF_HUB_OFFLINE:  # huggingface_hub's parse of the variable, read at call time
            raise ModelLoadError(
                f"model {reference!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set: "
                "unset HF_HUB_OFFLINE to download it, point HF_HOME/HF_HUB_CACHE at a cache that has it, "
                "or pass a local directory"
            ) from error
        raise ModelLoadError(
            f"model {reference!r} could not be downloaded and is not cached ({error}); check the network, "
            "or point HF_HOME/HF_HUB_CACHE at a cache that has it, or pass a local directory"
        ) from error
    except GatedRepoError as error:
        raise ModelLoadError(f"model {reference!r} is gated: set HF_TOKEN to a token with access") from error
    except RepositoryNotFoundError as error:
        raise ModelLoadError(
            f"model {reference!r} not found on the hub (private? set HF_TOKEN) and not a local directory"
        ) from error
    except Exception as error:  # network and HTTP failures surface as many types
        raise ModelLoadError(f"model {reference!r} could not be fetched: {error}") from error


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot read {path}: {error}") from error


def _has_processor_files(directory: Path) -> bool:
    return any(
        (directory / name).exists()
        for name in ("preprocessor_config.json", "processor_config.json", "tokenizer_config.json")
    )


def resolve_checkpoint(reference: str, revision: str | None = None, token: str | None = None) -> ResolvedCheckpoint:
    """Resolve `reference` (and, for a LoRA adapter, its base model) to local directories; `token`
    authenticates hub downloads of both."""
    directory = fetch_to_directory(reference, revision, token)
    adapter_config_path = directory / "adapter_config.json"
    if adapter_config_path.exists():
        adapter_config = read_json(adapter_config_path)
        base_reference = adapter_config.get("base_model_name_or_path")
        if not base_reference:
            raise ModelLoadError(f"{adapter_config_path} names no base_model_name_or_path")
        base_directory = fetch_to_directory(base_reference, token=token)
        if (base_directory / "adapter_config.json").exists():
            raise ModelLoadError(f"base model {base_reference!r} of {reference!r} is itself an adapter")
        weights_dir, adapter_dir = base_directory, directory
    else:
        weights_dir, adapter_dir = directory, None
    config_path = weights_dir / "config.json"
    if not config_path.exists():
        raise ModelLoadError(f"{weights_dir} has no config.json: not a model checkpoint")
    processor_dir = directory if _has_processor_files(directory) else weights_dir
    return ResolvedCheckpoint(reference, weights_dir, adapter_dir, processor_dir, read_json(config_path))
