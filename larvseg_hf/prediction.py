# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""Segment one image with a LarvSeg model: the inference policy of the demo, as a function of the package.

`predict(model, processor, image, ...)` opens the image (a path, PIL image, array or bytes), downscales
it when its longest side is over `max_side`, runs the model over the whole vocabulary, some classes or
the k largest classes found, optionally attentively (coseg) or with sliding windows, and returns a
`Segmentation`: the label map of vocabulary ids with the class names, areas and notes on what was done.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .image_utils_larvseg import InvalidImageError, to_label_array, to_rgb_array
from .inference_larvseg import sliding_window_logits
from .vocabulary import closest_names, normalize_name

MAX_SIDE = 1024  # longer images are downscaled so that the longest side is this
BACKGROUND_NAME = "background"  # normalised name of the class that `background_fraction` counts


class PredictionError(ValueError):
    """The request cannot be served as given (an unreadable image, an unknown class name, a bad top_k);
    the message says what to change."""


@dataclass
class Segmentation:
    """One result: the image as segmented, its label map of vocabulary ids and how it was made."""

    image: Image.Image  # RGB, as segmented (possibly downscaled)
    label_map: np.ndarray  # (H, W) int64 vocabulary ids
    id2label: dict[int, str]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    classes: list[int] | None = None  # the vocabulary ids inference was restricted to; None: all
    top_k: int | None = None
    coseg: bool = False
    sliding: bool = False

    def areas(self) -> list[tuple[int, int]]:
        """(vocabulary id, pixels) for every class present, largest first."""
        ids, counts = np.unique(self.label_map, return_counts=True)
        order = sorted(zip(ids.tolist(), counts.tolist(), strict=True), key=lambda item: (-item[1], item[0]))
        return [(int(i), int(c)) for i, c in order]

    def area_percentages(self) -> list[float]:
        """% of the image for each entry of `areas()`, in hundredths rounded by largest remainder, so that
        they add up to exactly 100."""
        exact = np.array([c for _, c in self.areas()], dtype=np.float64) * 10000.0 / self.label_map.size
        units = np.floor(exact).astype(np.int64)
        short = 10000 - int(units.sum())
        if short > 0:
            units[np.argsort(-(exact - units), kind="stable")[:short]] += 1
        return [u / 100.0 for u in units.tolist()]

    def name(self, class_id: int) -> str:
        return str(self.id2label.get(class_id, f"class {class_id}"))

    def is_background(self, class_id: int) -> bool:
        """Whether the class is named background, in any case or spacing ("Background", " BACKGROUND")."""
        return normalize_name(self.name(class_id)) == BACKGROUND_NAME

    def background_fraction(self) -> float:
        """Share of the pixels labelled background (any class whose normalised name is "background")."""
        ids = [i for i, _ in self.areas() if self.is_background(i)]
        return float(np.isin(self.label_map, ids).mean()) if ids else 0.0

    def save_label_map(self, directory: str | Path, stem: str = "label_map") -> Path:
        """The label map as a 16-bit PNG (ids up to 65535 survive), a .npy for larger vocabularies; the name
        gets a random suffix, so that results saved to one folder never overwrite each other."""
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


def read_label_map(path: str | Path) -> np.ndarray:
    """Inverse of `Segmentation.save_label_map`: (H, W) int64 vocabulary ids."""
    path = Path(path)
    if path.suffix == ".npy":
        return to_label_array(np.load(path), str(path))
    with Image.open(path) as image:
        return to_label_array(image, str(path))


def open_image(source: Any, max_side: int = MAX_SIDE) -> tuple[Image.Image, list[str]]:
    """A path, PIL image, array or bytes -> RGB PIL image at most `max_side` on its longest side, and notes
    on what was changed. Non-images and corrupt files raise PredictionError."""
    if source is None:
        raise PredictionError("No image given.")
    name = Path(source).name if isinstance(source, str | Path) else "the image"
    if isinstance(source, np.ndarray | torch.Tensor):  # pixels already: the shared rules, their own errors
        try:
            source = Image.fromarray(to_rgb_array(source))
        except (InvalidImageError, TypeError) as err:
            raise PredictionError(str(err)) from err
    try:
        if isinstance(source, Image.Image):
            image = source
        elif isinstance(source, bytes | bytearray):
            image = Image.open(io.BytesIO(source))
        else:
            image = Image.open(source)
        image.load()  # decode now: truncated / corrupt data fails here, not in the model
        image = Image.fromarray(to_rgb_array(ImageOps.exif_transpose(image)))
    except FileNotFoundError as err:
        raise PredictionError(f"{name} could not be found; if it was uploaded, upload it again.") from err
    except Image.DecompressionBombError as err:
        raise PredictionError(f"{name} is too large to decode safely ({err}).") from err
    except UnidentifiedImageError as err:
        raise PredictionError(
            f"{name} is not an image LarvSeg can read: use a PNG, JPEG, WebP, BMP, GIF or TIFF image."
        ) from err
    except (OSError, SyntaxError, ValueError, TypeError) as err:
        raise PredictionError(f"{name} could not be decoded; it looks corrupt or truncated ({err}).") from err
    if min(image.size) < 1:
        raise PredictionError(f"{name} is empty (size {image.width}x{image.height}).")
    notes: list[str] = []
    if max(image.size) > max_side:
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        notes.append(
            f"The image was downscaled from {image.width}x{image.height} to {size[0]}x{size[1]} "
            f"(longest side over {max_side} px); the overlay, areas and label map are at {size[0]}x{size[1]}."
        )
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image, notes


def resolve_classes(model: torch.nn.Module, classes: Sequence[str | int]) -> list[int]:
    """Class names or ids -> vocabulary ids, duplicates dropped. Every unknown name is reported at once,
    each with the closest known names."""
    ids, problems = [], []
    for entry in dict.fromkeys(classes):
        try:
            ids.append(int(model.resolve_class_ids([entry])[0]))
        except KeyError as err:
            message = str(err.args[0]) if err.args else f"Unknown class name {entry!r}."
            if "closest" not in message.lower():  # code saved with an older model may not suggest any
                close = closest_names(str(entry), model.config.id2label.values())
                message += f" Closest known names: {', '.join(close)}." if close else ""
            problems.append(message)
        except (TypeError, ValueError) as err:  # not a name or id, or an id outside the vocabulary
            problems.append(str(err))
    if problems:
        raise PredictionError("\n".join(f"- {p}" for p in problems))
    if not ids:
        raise PredictionError("No classes given: name at least one class, or pass classes=None for all.")
    return list(dict.fromkeys(ids))  # two spellings of one name are one class


def _window_size(processor: Any) -> tuple[int, int]:
    size = processor.size
    if "height" in size and "width" in size:
        return int(size["height"]), int(size["width"])
    side = int(size.get("shortest_edge", 512))
    return side, side


@torch.no_grad()
def predict_label_map(
    model: torch.nn.Module,
    processor: Any,
    image: Image.Image,
    class_ids: Sequence[int] | None = None,
    coseg: bool = False,
    sliding: bool = False,
) -> np.ndarray:
    """(H, W) vocabulary ids for an RGB image, over `class_ids` (None: the whole vocabulary).

    Sliding windows: the image keeps its aspect ratio with its short side at the window's, and windows of
    the processor's size slide over it with a stride of 2/3 of a window, rounded down to the processor's
    `size_divisor` (mmseg "slide" mode)."""
    device = next(model.parameters()).device
    columns = torch.tensor(list(class_ids), dtype=torch.long, device=device) if class_ids else None
    if sliding:
        window_h, window_w = _window_size(processor)
        divisor = max(int(getattr(processor, "size_divisor", 1) or 1), 1)
        pixel_values = processor(image, size={"shortest_edge": min(window_h, window_w)})["pixel_values"]
        stride = tuple(max(divisor, (side * 2 // 3) // divisor * divisor) for side in (window_h, window_w))
        try:
            logits, ids = sliding_window_logits(
                model, pixel_values.to(device), (window_h, window_w), stride, class_ids=columns, coseg=coseg
            )
        except ValueError as err:
            raise PredictionError(f"Sliding-window inference is not possible with this model: {err}") from err
        outputs = SimpleNamespace(logits=logits, class_ids=ids)
    else:
        pixel_values = processor(image)["pixel_values"].to(device)
        outputs = model(pixel_values, class_ids=columns, coseg=coseg)
    result = processor.post_process_semantic_segmentation(outputs, target_sizes=[(image.height, image.width)])
    return result[0].cpu().numpy().astype(np.int64)


def _check_top_k(top_k: Any) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 1:
        raise PredictionError(f"top_k must be a whole number of at least 1, got {top_k!r}.")
    return int(top_k)


def predict(
    model: torch.nn.Module,
    processor: Any,
    image: Any,
    classes: Sequence[str | int] | None = None,
    top_k: int | None = None,
    coseg: bool = False,
    sliding: bool = False,
    max_side: int = MAX_SIDE,
) -> Segmentation:
    """Segment one image (a path, PIL image, array or bytes) with a LarvSeg model and its processor.

    classes: names or ids to restrict the vocabulary to (None: all classes). top_k: segment, keep the k
    classes covering the most pixels and segment again with only those. coseg: attentive inference from
    the memory bank. sliding: sliding-window inference (see `predict_label_map`). Images whose longest side is
    over `max_side` are downscaled first (a note says so). Mistakes in the request raise PredictionError.
    """
    start = time.perf_counter()
    k = None if top_k is None else _check_top_k(top_k)
    rgb, notes = open_image(image, max_side)
    class_ids = None if classes is None else resolve_classes(model, classes)
    result = predict_label_map(model, processor, rgb, class_ids, coseg, sliding)
    if k is not None:
        ids, counts = np.unique(result, return_counts=True)
        keep = [int(i) for i in ids[np.argsort(-counts, kind="stable")][:k]]
        result = predict_label_map(model, processor, rgb, keep, coseg, sliding)
        searched = "the whole vocabulary" if class_ids is None else f"the {len(class_ids)} classes asked for"
        notes.append(
            f"Top-{k}: {len(ids)} classes found over {searched}; re-ran on the {len(keep)} largest: "
            f"{', '.join(model.config.id2label[i] for i in keep)}."
        )
    return Segmentation(
        image=rgb,
        label_map=result,
        id2label={int(i): str(n) for i, n in model.config.id2label.items()},
        notes=notes,
        seconds=time.perf_counter() - start,
        classes=class_ids,
        top_k=k,
        coseg=bool(coseg),
        sliding=bool(sliding),
    )


__all__ = [
    "PredictionError",
    "Segmentation",
    "open_image",
    "predict",
    "predict_label_map",
    "read_label_map",
    "resolve_classes",
]
