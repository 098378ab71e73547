"""LarvSeg demo: large-vocabulary semantic segmentation in the browser (a Gradio Space).

    python demo/app.py --model outputs/larvseg-emoji      # http://127.0.0.1:7860
    python demo/app.py --model your-org/larvseg-model --host 0.0.0.0 --port 7860

The model defaults to $LARVSEG_MODEL, else `outputs/larvseg-emoji` in the working directory (where
`larvseg-train` saves it), else, in a checkout, under the repository root (where `bash scripts/run_main.sh`
saves it). A missing or corrupt model is reported in the page, not raised.

Everything the UI does is plain Python below (`LarvSegDemo.segment`; `segment_ui` for the page, which
returns component updates with the overlay's colours; `segment_request` for the /segment API, which returns
plain values), so it is tested without a browser; `build_demo(model_path)` returns the `gr.Blocks`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import copy
import difflib
import importlib
import io
import json
import logging
import os
import re
import struct
import sys
import tempfile
import time
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger("larvseg_demo")

REPO_ROOT = Path(__file__).resolve().parent.parent  # the checkout, when this file is demo/app.py in one
DEFAULT_MODEL_DIR = Path("outputs") / "larvseg-emoji"  # where larvseg-train / run_main.sh save the model
TRAIN_COMMAND = "bash scripts/run_main.sh"
MAX_SIDE = 1024  # longer uploads are downscaled so that the longest side is this
MODE_ALL, MODE_SOME, MODE_TOPK = "all classes", "these classes", "top-k found"
MODES = (MODE_ALL, MODE_SOME, MODE_TOPK)
TABLE_COLUMNS = ["class", "id", "pixels", "% of image"]
ANNOTATION_ALPHA = 0.55  # mask opacity in the overlay
MAX_LEGEND = 20  # overlay entries; smaller classes beyond these share one entry
BACKGROUND_NAME = "background"  # normalised name of the class left unpainted unless asked for
# Well-separated colours (after Trubetskoy's "20 distinct colours"), saturated ones first: the largest
# classes get the most distinct. Background and the grouped smaller classes get greys.
PALETTE = (
    "#e6194b",  # red
    "#4363d8",  # blue
    "#ffe119",  # yellow
    "#3cb44b",  # green
    "#f032e6",  # magenta
    "#42d4f4",  # cyan
    "#f58231",  # orange
    "#911eb4",  # purple
    "#bfef45",  # lime
    "#469990",  # teal
    "#000075",  # navy
    "#800000",  # maroon
    "#808000",  # olive
    "#9a6324",  # brown
    "#fabed4",  # pink
    "#dcbeff",  # lavender
    "#aaffc3",  # mint
    "#ffd8b1",  # apricot
    "#fffac8",  # beige
)
BACKGROUND_COLOR = "#5a5a5a"
OTHERS_COLOR = "#a9a9a9"


class DemoError(Exception):
    """A problem the user can fix (bad upload, unknown class name, ...); shown in the page as is."""


class ModelLoadError(DemoError):
    """The model could not be loaded; `heading` is what the page shows above the message."""

    heading = "Model could not be loaded"
    elem_id = "model-error"


class ModelNotFoundError(ModelLoadError):
    """Nothing to load: no such folder, a folder without the model's files, or an unreachable Hub id."""

    heading = "Model not found"
    elem_id = "model-missing"


class ModelCorruptError(ModelLoadError):
    """The model's files are there but do not load (invalid JSON, truncated weights, ...): retraining into
    the same folder or re-downloading fixes it, unlike a missing model."""

    heading = "Model files are corrupt"
    elem_id = "model-corrupt"


# ------------------------------------------------------------------------------------------- loading

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


def _checkout_root() -> Path | None:
    """The repository root when this file is demo/app.py of a checkout; None in an installed package."""
    if (REPO_ROOT / "scripts" / "run_main.sh").is_file() and (REPO_ROOT / "demo" / "app.py").is_file():
        return REPO_ROOT
    return None


def default_model_path() -> str:
    """$LARVSEG_MODEL; else ./outputs/larvseg-emoji (where `larvseg-train` saves it) when it exists or
    when this file is not in a checkout (an installed wheel: never a path into site-packages); else the
    checkout's outputs/larvseg-emoji (where `bash scripts/run_main.sh` saves it, from any directory)."""
    if os.environ.get("LARVSEG_MODEL"):
        return os.environ["LARVSEG_MODEL"]
    local = Path.cwd() / DEFAULT_MODEL_DIR
    checkout = _checkout_root()
    if local.exists() or checkout is None:
        return str(local)
    return str(checkout / DEFAULT_MODEL_DIR)


def missing_model_message(model_path: str | Path, reason: str | None = None) -> str:
    """Why nothing was loaded and the command that trains the default model."""
    detail = f" ({reason})" if reason else ""
    return (
        f"No LarvSeg model could be loaded from `{model_path}`{detail}. Train the default model, from the "
        f"repository root, with:\n\n```bash\n{TRAIN_COMMAND}\n```\n\n(or `larvseg-train` with the package "
        "installed). It is saved to `outputs/larvseg-emoji`; then restart the demo, or pass another model "
        "with `python demo/app.py --model PATH_OR_HUB_ID`."
    )


def corrupt_model_message(model_path: str | Path, problems: Sequence[str], error: BaseException) -> str:
    """What is wrong with files that are present, and how to get good ones."""
    found = "\n".join(f"- {problem}" for problem in problems) or f"- {_first_line(error)}"
    cause = "damaged" if problems else "damaged, or written by another version of the code"
    return (
        f"The model at `{model_path}` has its files, but they could not be loaded:\n\n{found}\n\n"
        f"The files look {cause} (an interrupted save or download?). Re-train into the folder with "
        f"`{TRAIN_COMMAND}`, re-download the model, or pass another with `--model PATH_OR_HUB_ID`."
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


def missing_model_files(folder: Path) -> list[str]:
    """The files a saved LarvSeg model needs that `folder` lacks (config, weights, processor config)."""
    missing = [name for name in (CONFIG_FILE,) if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        missing.append("model weights (model.safetensors)")
    if not (folder / PROCESSOR_FILE).is_file():
        missing.append(PROCESSOR_FILE)
    return missing


def find_corrupt_files(folder: Path) -> list[str]:
    """Cheap checks of the files present: JSON that does not parse, safetensors shorter than their header
    says. Run only after a failed load, to name the damaged file whatever the loader's message said."""
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


def classify_load_error(model_path: str, error: BaseException) -> ModelLoadError:
    """A failed load -> "not found" or "corrupt", from the files present and the error's messages (no
    exception classes of larvseg_hf: a Space loads the model with trust_remote_code, without the package)."""
    folder = Path(model_path)
    messages = " | ".join(_first_line(e) for e in _error_chain(error))
    if folder.is_dir():
        problems = find_corrupt_files(folder)
        named = re.findall(r"[\w.-]+\.(?:json|safetensors|bin|py)\b", messages)
        absent = [name for name in dict.fromkeys(named) if not (folder / Path(name).name).exists()]
        says_missing = re.search(r"does not appear to have|no such file|no file named", messages, re.I)
        if not problems and absent and says_missing:
            reason = f"no {', '.join(absent)} in the folder"
            return ModelNotFoundError(missing_model_message(model_path, reason))
        return ModelCorruptError(corrupt_model_message(model_path, problems, error))
    types = {cls.__name__ for e in _error_chain(error) for cls in type(e).__mro__}
    if _UNREACHABLE.search(messages) or types & _UNREACHABLE_TYPES:
        reason = f"no such folder, and as a Hub id it could not be found or reached: {_first_line(error)}"
        return ModelNotFoundError(missing_model_message(model_path, reason))
    return ModelCorruptError(corrupt_model_message(model_path, [], error))


def _load_model_and_processor(model_path: str):
    """Installed package if present; otherwise the code saved next to the weights (trust_remote_code),
    which is how a Space runs with only transformers and torch installed."""
    try:
        from larvseg_hf import LarvSegForSemanticSegmentation, LarvSegImageProcessor
    except ImportError:
        from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

        model = AutoModelForSemanticSegmentation.from_pretrained(model_path, trust_remote_code=True)
        processor = AutoImageProcessor.from_pretrained(model_path, trust_remote_code=True)
    else:
        model = LarvSegForSemanticSegmentation.from_pretrained(model_path)
        processor = LarvSegImageProcessor.from_pretrained(model_path)
    return model.eval(), processor


def find_examples(model_path: str | Path, limit: int = 6) -> list[str]:
    """Eval scenes of the built-in benchmark the model was trained on (its `larvseg_training.json` "root"),
    images only (label maps excluded); none when the model does not name a local benchmark."""
    info = Path(model_path) / "larvseg_training.json"
    try:
        root = json.loads(info.read_text()).get("root") if info.is_file() else None
    except (OSError, ValueError):
        return []
    if not root:
        return []
    eval_dir = Path(root) / "eval"
    labels: set[str] = set()
    metadata = eval_dir / "metadata.jsonl"
    if metadata.is_file():
        for line in metadata.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            for key in ("label_file_name", "label", "mask_file_name"):
                if isinstance(row.get(key), str):
                    labels.add(Path(row[key]).name)
    images = [
        p
        for p in sorted(eval_dir.glob("*.png"))
        if p.name not in labels and not any(tag in p.stem.lower() for tag in ("label", "mask"))
    ]
    return [str(p) for p in images[:limit]]


# ------------------------------------------------------------------------------------------- images


def open_image(source: Any) -> tuple[Image.Image, list[str]]:
    """An upload (path, PIL image, array or bytes) -> RGB PIL image at most MAX_SIDE on its longest side,
    and notes for the page. Non-images and corrupt files raise DemoError."""
    notes: list[str] = []
    if source is None:
        raise DemoError("Upload an image first.")
    name = Path(source).name if isinstance(source, str | Path) else "the upload"
    try:
        if isinstance(source, Image.Image):
            image = source
        elif isinstance(source, np.ndarray):
            image = Image.fromarray(source)
        elif isinstance(source, bytes | bytearray):
            image = Image.open(io.BytesIO(source))
        else:
            image = Image.open(source)
        image.load()  # decode now: truncated / corrupt data fails here, not in the model
        image = ImageOps.exif_transpose(image)
        image = _to_rgb(image)
    except FileNotFoundError as err:
        raise DemoError(f"The upload {name} could not be found on the server; upload it again.") from err
    except Image.DecompressionBombError as err:
        raise DemoError(f"{name} is too large to decode safely ({err}).") from err
    except UnidentifiedImageError as err:
        raise DemoError(
            f"{name} is not an image this demo can read: upload a PNG, JPEG, WebP, BMP, GIF or TIFF image."
        ) from err
    except (OSError, SyntaxError, ValueError, TypeError) as err:
        raise DemoError(f"{name} could not be decoded; it looks corrupt or truncated ({err}).") from err
    if min(image.size) < 1:
        raise DemoError(f"{name} is empty (size {image.width}x{image.height}).")
    if max(image.size) > MAX_SIDE:
        scale = MAX_SIDE / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        notes.append(
            f"The image was downscaled from {image.width}x{image.height} to {size[0]}x{size[1]} "
            f"(longest side over {MAX_SIDE} px); the overlay, areas and label map are at {size[0]}x{size[1]}."
        )
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image, notes


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / top * 255.0, 0, 255).round().astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def payload_to_source(payload: Any) -> Any:
    """The Image component's raw payload (the event runs with preprocess=False, so that a non-image upload
    reaches our own error message instead of a failing preprocess) -> something open_image reads.
    Gradio has already checked that the path lies in its upload cache."""
    if isinstance(payload, dict):
        if payload.get("path"):
            return payload["path"]
        url = payload.get("url") or ""
        if url.startswith("data:"):
            try:
                return base64.b64decode(url.split(",", 1)[1], validate=False)
            except (IndexError, binascii.Error) as err:
                raise DemoError("The pasted image data could not be decoded.") from err
        return None
    return payload


# ------------------------------------------------------------------------------------------- results


def normalize_name(name: str) -> str:
    """The matching form of larvseg_hf.vocabulary.normalize_name (NFKC, lower case, runs of spaces, `_`
    and `-` -> one space), repeated here because a Space runs without the package."""
    return re.sub(r"[\s_-]+", " ", unicodedata.normalize("NFKC", str(name)).lower()).strip()


def closest_names(name: str, vocabulary: Sequence[str], n: int = 5) -> list[str]:
    """Up to `n` vocabulary names that look like `name` (difflib on the normalised forms, then substrings)."""
    by_norm: dict[str, str] = {}
    for entry in vocabulary:
        by_norm.setdefault(normalize_name(entry), entry)
    query = normalize_name(name)
    matches = difflib.get_close_matches(query, list(by_norm), n=n, cutoff=0.5)
    matches += [k for k in by_norm if query and (query in k or k in query) and k not in matches][
        : n - len(matches)
    ]
    return [by_norm[m] for m in matches]


@dataclass
class Segmentation:
    """One result: the image as segmented, its label map and how it was made (for the status line)."""

    image: Image.Image  # RGB, as segmented (possibly downscaled)
    label_map: np.ndarray  # (H, W) int64 vocabulary ids
    id2label: dict[int, str]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    mode: str = MODE_ALL
    coseg: bool = False
    sliding: bool = False

    def areas(self) -> list[tuple[int, int]]:
        """(vocabulary id, pixels) for every class present, largest first."""
        ids, counts = np.unique(self.label_map, return_counts=True)
        order = sorted(zip(ids.tolist(), counts.tolist(), strict=True), key=lambda item: (-item[1], item[0]))
        return [(int(i), int(c)) for i, c in order]

    def name(self, class_id: int) -> str:
        return str(self.id2label.get(class_id, f"class {class_id}"))

    def is_background(self, class_id: int) -> bool:
        return normalize_name(self.name(class_id)) == BACKGROUND_NAME

    def annotations(
        self, max_entries: int = MAX_LEGEND, show_background: bool = False
    ) -> list[tuple[np.ndarray, str]]:
        """AnnotatedImage legend: (mask in [0, 1], class name) for the largest classes, largest first.

        Background is left out unless `show_background` (painted, it hides the image it surrounds). Past
        `max_entries` entries the smallest classes share one ("N smaller classes"): every entry is a
        full-size mask the server encodes and the page downloads, and a legend of hundreds is unreadable."""
        shown, rest = self._legend_ids(show_background, max_entries)
        entries = [((self.label_map == i).astype(np.float32) * ANNOTATION_ALPHA, self.name(i)) for i in shown]
        if rest:
            mask = np.isin(self.label_map, rest).astype(np.float32) * ANNOTATION_ALPHA
            entries.append((mask, others_label(len(rest))))
        return entries

    def _legend_ids(self, show_background: bool, max_entries: int) -> tuple[list[int], list[int]]:
        """(ids with their own legend entry, ids grouped into one), largest first."""
        ids = [i for i, _ in self.areas() if show_background or not self.is_background(i)]
        if len(ids) > max_entries:
            return ids[: max_entries - 1], ids[max_entries - 1 :]
        return ids, []

    def color_map(self, show_background: bool = False, max_entries: int = MAX_LEGEND) -> dict[str, str]:
        """Legend label -> colour: PALETTE in order of size for the classes (largest first, background
        skipped), greys for background and for the grouped smaller classes."""
        shown, rest = self._legend_ids(show_background, max_entries)
        colors: dict[str, str] = {}
        rank = 0
        for class_id in shown:
            if self.is_background(class_id):
                colors[self.name(class_id)] = BACKGROUND_COLOR
            else:
                colors[self.name(class_id)] = PALETTE[rank % len(PALETTE)]
                rank += 1
        if rest:
            colors[others_label(len(rest))] = OTHERS_COLOR
        return colors

    def background_fraction(self) -> float:
        """Share of the pixels labelled background (any class whose normalised name is "background")."""
        ids = [i for i, _ in self.areas() if self.is_background(i)]
        return float(np.isin(self.label_map, ids).mean()) if ids else 0.0

    def area_table(self) -> pd.DataFrame:
        """class, id, pixels, % of image; percentages in hundredths rounded by largest remainder, so the
        column adds up to exactly 100."""
        areas = self.areas()
        exact = np.array([c for _, c in areas], dtype=np.float64) * 10000.0 / self.label_map.size
        units = np.floor(exact).astype(np.int64)
        short = 10000 - int(units.sum())
        if short > 0:
            units[np.argsort(-(exact - units), kind="stable")[:short]] += 1
        rows = [[self.name(i), i, c, u / 100.0] for (i, c), u in zip(areas, units.tolist(), strict=True)]
        return pd.DataFrame(rows, columns=TABLE_COLUMNS)

    def save_label_map(self, directory: str | Path, stem: str = "label_map") -> Path:
        """The label map as a 16-bit PNG (ids up to 65535 survive); a .npy for larger vocabularies."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        unique = uuid.uuid4().hex[:8]
        if self.label_map.max(initial=0) <= 65535 and self.label_map.min(initial=0) >= 0:
            path = directory / f"{stem}-{unique}.png"
            Image.fromarray(self.label_map.astype(np.uint16)).save(path)  # mode I;16
        else:
            path = directory / f"{stem}-{unique}.npy"
            np.save(path, self.label_map.astype(np.int32))
        return path


def others_label(count: int) -> str:
    return f"{count} smaller classes"


def read_label_map(path: str | Path) -> np.ndarray:
    """Inverse of Segmentation.save_label_map."""
    path = Path(path)
    if path.suffix == ".npy":
        return np.load(path).astype(np.int64)
    return np.asarray(Image.open(path)).astype(np.int64)


# ------------------------------------------------------------------------------------------- model


class LarvSegDemo:
    """The model, its processor and the segmentation logic behind the page."""

    def __init__(self, model: torch.nn.Module, processor: Any):
        self.model = model.eval()
        self.processor = processor
        # Works for the installed package and for code loaded with trust_remote_code alike.
        package = type(processor).__module__.rsplit(".", 1)[0]
        self._inference = importlib.import_module(f"{package}.inference_larvseg")
        config = model.config
        self.id2label = {int(i): str(name) for i, name in config.id2label.items()}
        self.names = [self.id2label[i] for i in range(config.num_labels)]

    @classmethod
    def load(cls, model_path: str | Path) -> LarvSegDemo:
        """Raises ModelNotFoundError (nothing to load) or ModelCorruptError (files there but broken)."""
        model_path = str(model_path)
        folder = Path(model_path)
        if folder.exists():
            if not folder.is_dir():
                raise ModelNotFoundError(missing_model_message(model_path, "a file, not a model folder"))
            missing = missing_model_files(folder)
            if missing:
                reason = f"the folder has no {', '.join(missing)}"
                raise ModelNotFoundError(missing_model_message(model_path, reason))
        elif not _looks_like_hub_id(model_path):
            raise ModelNotFoundError(missing_model_message(model_path, "no such folder"))
        try:
            model, processor = _load_model_and_processor(model_path)
        except Exception as err:  # any loader failure becomes a page message; classified below
            logger.warning("Could not load %s: %s", model_path, _first_line(err))
            raise classify_load_error(model_path, err) from err
        return cls(model, processor)

    # --------------------------------------------------------------------------------- vocabulary

    def resolve(self, names: Sequence[str] | str | None) -> list[int]:
        """Class names -> vocabulary ids. Unknown names raise DemoError listing the closest known names.

        An entry that is not a name but holds commas is split ("cat, dog"), as typed into the box."""
        if isinstance(names, str):
            names = [names]
        wanted: list[str] = []
        for entry in names or []:
            entry = str(entry).strip()
            if not entry:
                continue
            if entry in self.model.config.label2id or "," not in entry:
                wanted.append(entry)
            else:
                wanted.extend(part.strip() for part in entry.split(",") if part.strip())
        if not wanted:
            raise DemoError(f'Mode "{MODE_SOME}": pick or type at least one class name.')
        ids, problems = [], []
        for name in dict.fromkeys(wanted):
            try:
                ids.append(int(self.model.resolve_class_ids([name])[0]))
            except KeyError as err:
                message = str(err.args[0]) if err.args else f"Unknown class name {name!r}."
                if "closest" not in message.lower():  # code saved with an older model may not suggest any
                    close = closest_names(name, self.names)
                    message += f" Closest known names: {', '.join(close)}." if close else ""
                problems.append(message)
        if problems:
            raise DemoError("\n".join(f"- {p}" for p in problems))
        return ids

    # --------------------------------------------------------------------------------- inference

    def window_size(self) -> tuple[int, int]:
        size = self.processor.size
        if "height" in size and "width" in size:
            return int(size["height"]), int(size["width"])
        side = int(size.get("shortest_edge", 512))
        return side, side

    @torch.no_grad()
    def predict(
        self,
        image: Image.Image,
        class_ids: Sequence[int] | None = None,
        coseg: bool = False,
        sliding: bool = False,
    ) -> np.ndarray:
        """(H, W) vocabulary ids for an RGB image."""
        device = next(self.model.parameters()).device
        columns = torch.tensor(list(class_ids), dtype=torch.long, device=device) if class_ids else None
        if sliding:
            # The image keeps its aspect ratio with its short side at the window's, and windows of the
            # processor's size slide over it with 1/3 overlap (mmseg "slide" mode).
            window_h, window_w = self.window_size()
            divisor = max(int(getattr(self.processor, "size_divisor", 1) or 1), 1)
            processor = copy.deepcopy(self.processor)
            processor.size = {"shortest_edge": min(window_h, window_w)}
            pixel_values = processor(image)["pixel_values"].to(device)
            stride = tuple(
                max(divisor, (side * 2 // 3) // divisor * divisor) for side in (window_h, window_w)
            )
            try:
                logits, ids = self._inference.sliding_window_logits(
                    self.model, pixel_values, (window_h, window_w), stride, class_ids=columns, coseg=coseg
                )
            except ValueError as err:
                raise DemoError(f"Sliding-window inference is not possible with this model: {err}") from err
            outputs = SimpleNamespace(logits=logits, class_ids=ids)
        else:
            pixel_values = self.processor(image)["pixel_values"].to(device)
            outputs = self.model(pixel_values, class_ids=columns, coseg=coseg)
        label_map = self.processor.post_process_semantic_segmentation(
            outputs, target_sizes=[(image.height, image.width)]
        )[0]
        return label_map.cpu().numpy().astype(np.int64)

    def segment(
        self,
        image: Any,
        mode: str = MODE_ALL,
        classes: Sequence[str] | str | None = None,
        top_k: Any = 5,
        coseg: bool = False,
        sliding: bool = False,
    ) -> Segmentation:
        """Segment one upload in a vocabulary mode; every user mistake raises DemoError."""
        start = time.perf_counter()
        mode = mode or MODE_ALL
        if mode not in MODES:
            raise DemoError(f"Unknown vocabulary mode {mode!r}; choose one of {', '.join(MODES)}.")
        k = parse_top_k(top_k)
        rgb, notes = open_image(image)
        if mode == MODE_SOME:
            label_map = self.predict(rgb, self.resolve(classes), coseg, sliding)
        elif mode == MODE_TOPK:
            first = self.predict(rgb, None, coseg, sliding)
            ids, counts = np.unique(first, return_counts=True)
            keep = [int(i) for i in ids[np.argsort(-counts, kind="stable")][:k]]
            label_map = self.predict(rgb, keep, coseg, sliding)
            notes.append(
                f"Top-{k}: {len(ids)} classes found over the whole vocabulary; re-ran on the "
                f"{len(keep)} largest: {', '.join(self.id2label[i] for i in keep)}."
            )
        else:
            label_map = self.predict(rgb, None, coseg, sliding)
        return Segmentation(
            rgb,
            label_map,
            self.id2label,
            notes,
            time.perf_counter() - start,
            mode,
            bool(coseg),
            bool(sliding),
        )


def parse_top_k(top_k: Any) -> int:
    """k of "top-k found": a whole number >= 1. Checked in every mode, so that a bad k sent to the API
    is an error rather than silently replaced (0 used to become 5)."""
    if isinstance(top_k, bool) or top_k is None:
        raise DemoError(f"k (top-k found) must be a whole number of at least 1, got {top_k!r}.")
    try:
        value = float(top_k)
    except (TypeError, ValueError) as err:
        raise DemoError(f"k (top-k found) must be a whole number of at least 1, got {top_k!r}.") from err
    if not value.is_integer():
        raise DemoError(f"k (top-k found) must be a whole number of at least 1, got {top_k!r}.")
    if value < 1:
        raise DemoError(f"k (top-k found) must be at least 1, got {int(value)}.")
    return int(value)


# ------------------------------------------------------------------------------------------- UI


def _status(segmentation: Segmentation, show_background: bool = False) -> str:
    """The Markdown under the overlay: classes found, time, settings, the largest classes, notes."""
    areas = segmentation.areas()
    options = (
        [segmentation.mode]
        + (["attentive (coseg)"] if segmentation.coseg else [])
        + (["sliding window"] if segmentation.sliding else [])
    )
    lines = [
        f"**{len(areas)} classes** in {segmentation.image.width}x{segmentation.image.height} px, "
        f"{segmentation.seconds:.2f} s ({', '.join(options)}). Largest: "
        + ", ".join(
            f"{segmentation.name(i)} ({100 * c / segmentation.label_map.size:.1f}%)" for i, c in areas[:3]
        )
    ]
    background = segmentation.background_fraction()
    if background > 0 and not show_background:
        lines.append(
            f"- Background ({100 * background:.1f}% of the image) is not painted over the image; tick "
            "**Show background** to paint it. The table and the label map include it."
        )
    painted = sum(1 for i, _ in areas if show_background or not segmentation.is_background(i))
    if painted > MAX_LEGEND:
        lines.append(
            f"- The overlay names the {MAX_LEGEND - 1} largest classes and groups the other "
            f"{painted - MAX_LEGEND + 1}; the table and the label map have them all."
        )
    lines += [f"- {note}" for note in segmentation.notes]
    return "\n".join(lines)


def _empty_outputs(message: str) -> tuple:
    return None, pd.DataFrame(columns=TABLE_COLUMNS), None, message


def run_segmentation(
    demo: LarvSegDemo | None,
    load_error: str | None,
    output_dir: str | Path,
    image: Any,
    mode: str,
    classes: Any,
    top_k: Any,
    coseg: Any,
    sliding: Any,
    notify: bool = True,
) -> tuple[Segmentation | None, str | None, str | None]:
    """(result, label-map file, None) or (None, None, message): shared by the page and the API, so that
    every failure becomes a message in the status (and a toast), never a stack trace."""
    if demo is None:
        return None, None, f"**Model not loaded.** {load_error or ''}"
    try:
        segmentation = demo.segment(
            payload_to_source(image), mode or MODE_ALL, classes, top_k, bool(coseg), bool(sliding)
        )
        file_path = segmentation.save_label_map(output_dir, "larvseg_label_map")
    except DemoError as err:
        if notify:
            gr.Warning(str(err).splitlines()[0][:300])
        return None, None, f"**Could not segment:**\n\n{err}"
    except Exception as err:  # a bug or resource problem: log it, but keep the page readable
        logger.exception("Segmentation failed")
        if notify:
            gr.Warning(f"Segmentation failed: {type(err).__name__}")
        return None, None, f"**Segmentation failed:** {type(err).__name__}: {err}"
    return segmentation, str(file_path), None


def segment_request(
    demo: LarvSegDemo | None,
    load_error: str | None,
    output_dir: str | Path,
    image: Any,
    mode: str,
    classes: Any,
    top_k: Any,
    coseg: Any,
    sliding: Any,
    notify: bool = True,
    show_background: bool = False,
) -> tuple:
    """The /segment API: (overlay, area table, label-map file, status) as plain values.

    Not a gr.AnnotatedImage(...) update with a color_map: an update would reach API clients as
    {"value": ..., "color_map": ...}. The page uses `segment_ui` instead."""
    segmentation, file_path, error = run_segmentation(
        demo, load_error, output_dir, image, mode, classes, top_k, coseg, sliding, notify
    )
    if segmentation is None:
        return _empty_outputs(error or "")
    overlay = (segmentation.image, segmentation.annotations(show_background=bool(show_background)))
    return overlay, segmentation.area_table(), file_path, _status(segmentation, bool(show_background))


def overlay_update(segmentation: Segmentation, show_background: bool = False) -> dict:
    """The overlay with its colours: PALETTE largest-first, so the big classes are the distinct ones."""
    show_background = bool(show_background)
    return gr.update(
        value=(segmentation.image, segmentation.annotations(show_background=show_background)),
        color_map=segmentation.color_map(show_background=show_background),
    )


def merge_classes(selected: Any, typed: Any) -> list[str]:
    """Names picked in the dropdown plus the comma-separated names typed into the text box."""
    names = [str(name) for name in (selected if isinstance(selected, list | tuple) else [selected]) if name]
    if isinstance(typed, str) and typed.strip():
        names.append(typed)  # LarvSegDemo.resolve splits it at commas
    return names


def segment_ui(
    demo: LarvSegDemo | None,
    load_error: str | None,
    output_dir: str | Path,
    image: Any,
    mode: str,
    selected: Any,
    typed: Any,
    top_k: Any,
    coseg: Any,
    sliding: Any,
    show_background: Any,
    notify: bool = True,
) -> tuple:
    """One click of "Segment" in the page: (overlay update with its color_map, table, file, status, the
    result kept in the session so that "Show background" redraws without segmenting again)."""
    segmentation, file_path, error = run_segmentation(
        demo,
        load_error,
        output_dir,
        image,
        mode,
        merge_classes(selected, typed),
        top_k,
        coseg,
        sliding,
        notify,
    )
    if segmentation is None:
        return (*_empty_outputs(error or ""), None)
    return (
        overlay_update(segmentation, bool(show_background)),
        segmentation.area_table(),
        file_path,
        _status(segmentation, bool(show_background)),
        segmentation,
    )


def redraw(segmentation: Segmentation | None, show_background: Any) -> tuple:
    """The "Show background" box toggled: the same result drawn again (nothing before the first one)."""
    if segmentation is None:
        return gr.update(), gr.update()
    return overlay_update(segmentation, bool(show_background)), _status(segmentation, bool(show_background))


def cleared_outputs(image: Any = None) -> tuple:
    """A new upload, a chosen example or a removed image: the previous result must not stay next to it."""
    message = "Press **Segment**." if image else "Upload an image and press **Segment**."
    return (*_empty_outputs(message), None)


def _prune(directory: Path, max_age_s: float = 3600.0) -> None:
    now = time.time()
    for path in directory.glob("larvseg_label_map-*"):
        try:
            if now - path.stat().st_mtime > max_age_s:
                path.unlink()
        except OSError:
            pass


INTRO = """# LarvSeg: large-vocabulary semantic segmentation
Upload an image and press **Segment**. LarvSeg scores every pixel against the model's whole vocabulary,
including categories that were only ever seen with image-level labels
([paper](https://arxiv.org/abs/2501.06862)).
"""


def build_demo(model_path: str | Path | None = None) -> gr.Blocks:
    """The Space's page for a model folder or Hub id (default: see `default_model_path`)."""
    model_path = str(model_path or default_model_path())
    demo_model: LarvSegDemo | None = None
    load_error: ModelLoadError | None = None
    try:
        demo_model = LarvSegDemo.load(model_path)
    except ModelLoadError as err:
        load_error = err
        text = str(err).replace("\n\n", " ").replace("```bash\n", "").replace("\n```", "")
        logger.warning("%s: %s", err.heading, text)
    error_text = str(load_error) if load_error else None
    output_dir = Path(tempfile.gettempdir()) / "larvseg_demo"
    output_dir.mkdir(parents=True, exist_ok=True)

    names = demo_model.names if demo_model else []
    examples = find_examples(model_path) if demo_model else []

    def segment_page(image, mode, classes, typed, top_k, coseg, sliding, show_background):
        _prune(output_dir)
        return segment_ui(
            demo_model,
            error_text,
            output_dir,
            image,
            mode,
            classes,
            typed,
            top_k,
            coseg,
            sliding,
            show_background,
        )

    def segment(image, mode, classes, top_k, coseg, sliding, show_background):
        _prune(output_dir)
        return segment_request(
            demo_model,
            error_text,
            output_dir,
            image,
            mode,
            classes,
            top_k,
            coseg,
            sliding,
            show_background=show_background,
        )

    with gr.Blocks(title="LarvSeg demo", delete_cache=(3600, 3600)) as blocks:
        gr.Markdown(INTRO)
        if load_error is not None:
            gr.Markdown(f"### {load_error.heading}\n{load_error}", elem_id=load_error.elem_id)
        else:
            base = len(demo_model.model.config.base_label_ids or [])
            gr.Markdown(
                f"Model `{model_path}`: **{len(names):,} classes** "
                f"({base:,} with masks, {len(names) - base:,} from image-level labels only).",
                elem_id="model-info",
            )
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(label="Image", type="filepath", sources=["upload", "clipboard"], height=360)
                mode = gr.Radio(list(MODES), value=MODE_ALL, label="Vocabulary")
                # No custom values: then the dropdown highlights the first match as one types and Enter
                # picks it (with custom values Enter keeps the typed fragment). Free text goes below.
                classes = gr.Dropdown(
                    choices=names,
                    value=[],
                    multiselect=True,
                    allow_custom_value=False,
                    filterable=True,
                    label="These classes",
                    info=f'For "{MODE_SOME}": search {len(names):,} names; Enter picks the highlighted one.',
                    elem_id="classes",
                )
                typed = gr.Textbox(
                    label="…or type names, comma-separated",
                    placeholder="e.g. hot beverage, spider",
                    info="Unknown names are reported with the closest known names.",
                    elem_id="typed-classes",
                )
                top_k = gr.Slider(1, 50, value=5, step=1, label="k (top-k found)")
                with gr.Row():
                    coseg = gr.Checkbox(label="Attentive (coseg) inference", value=False)
                    sliding = gr.Checkbox(label="Sliding-window inference", value=False)
                button = gr.Button("Segment", variant="primary", interactive=demo_model is not None)
            with gr.Column(scale=1):
                overlay = gr.AnnotatedImage(label="Segmentation", show_legend=True, height=360)
                show_background = gr.Checkbox(
                    label="Show background",
                    value=False,
                    info="Paint the background class over the image too.",
                )
                status = gr.Markdown(
                    "**No model loaded**: see the message above."
                    if demo_model is None
                    else "Upload an image and press **Segment**.",
                    elem_id="status",
                    label="Status",  # names the API output
                )
                table = gr.Dataframe(
                    headers=TABLE_COLUMNS, label="Area per class", interactive=False, wrap=True
                )
                label_file = gr.File(label="Label map (16-bit PNG of vocabulary ids)")
        last = gr.State(None)
        if examples:
            gr.Examples(examples=[[path] for path in examples], inputs=[image], label="Benchmark eval scenes")
        outputs = [overlay, table, label_file, status]
        button.click(
            segment_page,
            inputs=[image, mode, classes, typed, top_k, coseg, sliding, show_background],
            outputs=[*outputs, last],
            api_visibility="private",  # returns component updates; API clients use /segment below
            preprocess=False,  # raw upload payloads: non-images get our message, not a preprocess error
            concurrency_limit=1,  # CPU inference: one at a time, the rest wait in the queue
            concurrency_id="segment",
        )
        # The endpoint /segment: no trigger in the page, plain values (see segment_request).
        gr.on(
            triggers=[],
            fn=segment,
            inputs=[image, mode, classes, top_k, coseg, sliding, show_background],
            outputs=outputs,
            api_name="segment",
            preprocess=False,
            concurrency_limit=1,
            concurrency_id="segment",
        )
        image.change(
            cleared_outputs,
            inputs=[image],
            outputs=[*outputs, last],
            api_visibility="private",
            preprocess=False,
            concurrency_limit=None,
            show_progress="hidden",
        )
        show_background.change(
            redraw,
            inputs=[last, show_background],
            outputs=[overlay, status],
            api_visibility="private",
            concurrency_limit=None,
            show_progress="hidden",
        )
    blocks.queue(default_concurrency_limit=1, max_size=64)
    return blocks


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="LarvSeg Gradio demo")
    parser.add_argument(
        "--model",
        default=default_model_path(),
        help="Model folder or Hub id (default: $LARVSEG_MODEL, else outputs/larvseg-emoji in the working "
        "directory or, in a checkout, under the repository root).",
    )
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--share", action="store_true", help="Create a public gradio.live link.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    args = parse_args(argv)
    blocks = build_demo(args.model)
    blocks.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        theme=gr.themes.Soft(),
        max_file_size="50mb",
        show_error=True,
    )


if __name__ == "__main__":
    sys.exit(main())
