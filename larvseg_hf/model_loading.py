# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""Load a saved LarvSeg model and its processor, with errors that say what is wrong and how to fix it.

`from_pretrained` fails in many ways that all look alike to a user (an OSError, a JSON error, a
safetensors error, a Hub error). `load_model_and_processor` sorts them into two: `ModelNotFoundError`
(nothing to load: no folder, a folder without the model's files, an unreachable Hub id) and
`ModelCorruptError` (the files are there but broken; the message names the file). The demo shows the
same messages in its page.

Only the standard library is imported at module level: the demo's Space runs a copy of this file
without the package, loading the model with the code saved next to its weights (`trust_remote_code`).
"""

from __future__ import annotations

import json
import logging
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TRAIN_COMMAND = "bash scripts/run_main.sh"
CONFIG_FILE = "config.json"
PROCESSOR_FILE = "preprocessor_config.json"
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
# Messages of transformers / huggingface_hub for a Hub id that does not exist or cannot be reached.
_UNREACHABLE = re.compile(
    r"couldn't connect|could not connect|connection|offline|timed out|not a valid model identifier|"
    r"repository not found|404|401|gated|does not exist|not found",
    re.IGNORECASE,
)
_UNREACHABLE_TYPES = {  # huggingface_hub / requests exception names, matched by name (no import needed)
    "RepositoryNotFoundError",
    "RevisionNotFoundError",
    "EntryNotFoundError",
    "LocalEntryNotFoundError",
    "GatedRepoError",
    "OfflineModeIsEnabled",
    "HFValidationError",
    "ConnectionError",
    "Timeout",
}


class ModelLoadError(OSError):
    """The model could not be loaded; `heading` names the kind of problem in a few words."""

    heading = "Model could not be loaded"


class ModelNotFoundError(ModelLoadError):
    """Nothing to load: no such folder, a folder without the model's files, or an unreachable Hub id."""

    heading = "Model not found"


class ModelCorruptError(ModelLoadError):
    """The model's files are there but do not load (invalid JSON, truncated weights, ...): retraining into
    the same folder or re-downloading fixes it, unlike a missing model."""

    heading = "Model files are corrupt"


@dataclass(frozen=True)
class LoadAdvice:
    """How the messages tell the user to go on once the model is trained: the demo is restarted and
    takes `--model`, a Python caller loads again."""

    retry: str = "load it again"
    switch: str = "load another model folder or Hub id"


def missing_model_message(
    model_path: str | Path, reason: str | None = None, advice: LoadAdvice = LoadAdvice()
) -> str:
    """Why nothing was loaded and the command that trains the default model."""
    detail = f" ({reason})" if reason else ""
    return (
        f"No LarvSeg model could be loaded from `{model_path}`{detail}. Train the default model, from the "
        f"repository root, with:\n\n```bash\n{TRAIN_COMMAND}\n```\n\n(or `larvseg-train` with the package "
        f"installed). It is saved to `outputs/larvseg-emoji`; then {advice.retry}, or {advice.switch}."
    )


def corrupt_model_message(
    model_path: str | Path,
    problems: Sequence[str],
    error: BaseException,
    advice: LoadAdvice = LoadAdvice(),
) -> str:
    """What is wrong with files that are present, and how to get good ones."""
    found = "\n".join(f"- {problem}" for problem in problems) or f"- {_first_line(error)}"
    cause = "damaged" if problems else "damaged, or written by another version of the code"
    return (
        f"The model at `{model_path}` has its files, but they could not be loaded:\n\n{found}\n\n"
        f"The files look {cause} (an interrupted save or download?). Re-train into the folder with "
        f"`{TRAIN_COMMAND}`, re-download the model, or {advice.switch}."
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def _error_chain(error: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def _looks_like_hub_id(path: str) -> bool:
    parts = path.split("/")
    return len(parts) == 2 and all(parts) and not path.startswith((".", "~")) and not Path(path).exists()


def missing_model_files(folder: str | Path) -> list[str]:
    """The files a saved LarvSeg model needs that `folder` lacks (config, weights, processor config)."""
    folder = Path(folder)
    missing = [name for name in (CONFIG_FILE,) if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        missing.append("model weights (model.safetensors)")
    if not (folder / PROCESSOR_FILE).is_file():
        missing.append(PROCESSOR_FILE)
    return missing


def find_corrupt_files(folder: str | Path) -> list[str]:
    """Cheap checks of the files present: JSON that does not parse, safetensors shorter than their header
    says. Run only after a failed load, to name the damaged file whatever the loader's message said."""
    folder = Path(folder)
    problems = []
    for path in sorted(folder.glob("*.json")):
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            problems.append(f"`{path.name}` is not valid JSON ({err}).")
        except OSError as err:
            problems.append(f"`{path.name}` cannot be read ({err}).")
    for path in sorted(folder.glob("*.safetensors")):
        problem = _safetensors_problem(path)
        if problem:
            problems.append(f"`{path.name}` {problem}.")
    return problems


def _safetensors_problem(path: Path) -> str | None:
    """None when the header parses and the file is as long as the header's tensors need."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                return f"is truncated ({size} bytes, not even a header)"
            (length,) = struct.unpack("<Q", prefix)
            if 8 + length > size:
                return f"is truncated ({size} bytes; its header alone needs {8 + length})"
            header = json.loads(handle.read(length))
    except OSError as err:
        return f"cannot be read ({err})"
    except (UnicodeDecodeError, ValueError):
        return "has a header that is not valid JSON"
    if not isinstance(header, dict):
        return "has a header that is not a JSON object"
    ends = [
        entry["data_offsets"][1]
        for key, entry in header.items()
        if key != "__metadata__" and isinstance(entry, dict) and len(entry.get("data_offsets") or ()) == 2
    ]
    needed = 8 + length + max(ends, default=0)
    if needed > size:
        return f"is truncated ({size:,} bytes; its tensors need {needed:,})"
    return None


def classify_load_error(
    model_path: str | Path, error: BaseException, advice: LoadAdvice = LoadAdvice()
) -> ModelLoadError:
    """A failed load -> "not found" or "corrupt", from the files present and the error's messages (no
    exception classes of larvseg_hf: code loaded with trust_remote_code raises its own)."""
    folder = Path(model_path)
    messages = " | ".join(_first_line(e) for e in _error_chain(error))
    if folder.is_dir():
        problems = find_corrupt_files(folder)
        named = re.findall(r"[\w.-]+\.(?:json|safetensors|bin|py)\b", messages)
        absent = [name for name in dict.fromkeys(named) if not (folder / Path(name).name).exists()]
        says_missing = re.search(r"does not appear to have|no such file|no file named", messages, re.I)
        if not problems and absent and says_missing:
            reason = f"no {', '.join(absent)} in the folder"
            return ModelNotFoundError(missing_model_message(model_path, reason, advice))
        return ModelCorruptError(corrupt_model_message(model_path, problems, error, advice))
    types = {cls.__name__ for e in _error_chain(error) for cls in type(e).__mro__}
    if _UNREACHABLE.search(messages) or types & _UNREACHABLE_TYPES:
        reason = f"no such folder, and as a Hub id it could not be found or reached: {_first_line(error)}"
        return ModelNotFoundError(missing_model_message(model_path, reason, advice))
    return ModelCorruptError(corrupt_model_message(model_path, [], error, advice))


def _from_pretrained(model_path: str, trust_remote_code: bool) -> tuple[Any, Any]:
    """The package's classes, or the code saved next to the weights (how a Space runs with only
    transformers and torch installed)."""
    if trust_remote_code:
        from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

        model = AutoModelForSemanticSegmentation.from_pretrained(model_path, trust_remote_code=True)
        processor = AutoImageProcessor.from_pretrained(model_path, trust_remote_code=True)
    else:
        from .image_processing_larvseg import LarvSegImageProcessor
        from .modeling_larvseg import LarvSegForSemanticSegmentation

        model = LarvSegForSemanticSegmentation.from_pretrained(model_path)
        processor = LarvSegImageProcessor.from_pretrained(model_path)
    return model.eval(), processor


def load_model_and_processor(
    model_path: str | Path, *, trust_remote_code: bool = False, advice: LoadAdvice = LoadAdvice()
) -> tuple[Any, Any]:
    """(model in eval mode, image processor) from a model folder or Hub id.

    Raises ModelNotFoundError (nothing to load) or ModelCorruptError (files there but broken, named in
    the message). `trust_remote_code` loads the code saved with the model instead of this package's;
    `advice` words the messages' last step for the caller (the demo names its `--model` option)."""
    model_path = str(model_path)
    folder = Path(model_path)
    if folder.exists():
        if not folder.is_dir():
            raise ModelNotFoundError(missing_model_message(model_path, "a file, not a model folder", advice))
        missing = missing_model_files(folder)
        if missing:
            reason = f"the folder has no {', '.join(missing)}"
            raise ModelNotFoundError(missing_model_message(model_path, reason, advice))
    elif not _looks_like_hub_id(model_path):
        raise ModelNotFoundError(missing_model_message(model_path, "no such folder", advice))
    try:
        return _from_pretrained(model_path, trust_remote_code)
    except Exception as err:  # any loader failure; classified below
        logger.warning("Could not load %s: %s", model_path, _first_line(err))
        raise classify_load_error(model_path, err, advice) from err


__all__ = [
    "LoadAdvice",
    "ModelCorruptError",
    "ModelLoadError",
    "ModelNotFoundError",
    "classify_load_error",
    "find_corrupt_files",
    "load_model_and_processor",
    "missing_model_files",
]
