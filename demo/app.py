"""LarvSeg demo: large-vocabulary semantic segmentation in the browser (a Gradio Space).

    python demo/app.py --model outputs/larvseg-emoji      # http://127.0.0.1:7860
    python demo/app.py --model your-org/larvseg-model --host 0.0.0.0 --port 7860

The model defaults to $LARVSEG_MODEL, else `outputs/larvseg-emoji` under the repository root (what
`bash scripts/run_main.sh` trains). A missing model is reported in the page, not raised.

Everything the UI does is plain Python below (`LarvSegDemo.segment`, `segment_request`), so it is
tested without a browser; `build_demo(model_path)` returns the `gr.Blocks`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import copy
import importlib
import io
import json
import logging
import os
import sys
import tempfile
import time
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

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = REPO_ROOT / "outputs" / "larvseg-emoji"
TRAIN_COMMAND = "bash scripts/run_main.sh"
MAX_SIDE = 1024  # longer uploads are downscaled so that the longest side is this
MODE_ALL, MODE_SOME, MODE_TOPK = "all classes", "these classes", "top-k found"
MODES = (MODE_ALL, MODE_SOME, MODE_TOPK)
TABLE_COLUMNS = ["class", "id", "pixels", "% of image"]
ANNOTATION_ALPHA = 0.55  # mask opacity in the overlay
MAX_LEGEND = 20  # overlay entries; smaller classes beyond these share one entry


class DemoError(Exception):
    """A problem the user can fix (bad upload, unknown class name, ...); shown in the page as is."""


class ModelNotFoundError(DemoError):
    pass


# ------------------------------------------------------------------------------------------- loading


def default_model_path() -> str:
    return os.environ.get("LARVSEG_MODEL") or str(DEFAULT_MODEL)


def missing_model_message(model_path: str | Path, reason: str | None = None) -> str:
    detail = f" ({reason})" if reason else ""
    return (
        f"No LarvSeg model could be loaded from `{model_path}`{detail}. Train the default model, from the "
        f"repository root, with:\n\n```bash\n{TRAIN_COMMAND}\n```\n\nIt is saved to `outputs/larvseg-emoji`; "
        "then restart the demo, or pass another model with `python demo/app.py --model PATH_OR_HUB_ID`."
    )


def _looks_like_hub_id(path: str) -> bool:
    parts = path.split("/")
    return len(parts) == 2 and all(parts) and not path.startswith((".", "~")) and not Path(path).exists()


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


@dataclass
class Segmentation:
    image: Image.Image  # RGB, as segmented (possibly downscaled)
    label_map: np.ndarray  # (H, W) int64 vocabulary ids
    id2label: dict[int, str]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def areas(self) -> list[tuple[int, int]]:
        """(vocabulary id, pixels) for every class present, largest first."""
        ids, counts = np.unique(self.label_map, return_counts=True)
        order = sorted(zip(ids.tolist(), counts.tolist(), strict=True), key=lambda item: (-item[1], item[0]))
        return [(int(i), int(c)) for i, c in order]

    def name(self, class_id: int) -> str:
        return str(self.id2label.get(class_id, f"class {class_id}"))

    def annotations(self, max_entries: int = MAX_LEGEND) -> list[tuple[np.ndarray, str]]:
        """AnnotatedImage legend: (mask in [0, 1], class name) for the largest classes, largest first.

        Past `max_entries` classes the smallest share one entry ("N smaller classes"): every entry is a
        full-size mask the server encodes and the page downloads, and a legend of hundreds is unreadable."""
        areas = self.areas()
        if len(areas) > max_entries:
            shown, rest = areas[: max_entries - 1], areas[max_entries - 1 :]
        else:
            shown, rest = areas, []
        entries = [
            ((self.label_map == i).astype(np.float32) * ANNOTATION_ALPHA, self.name(i)) for i, _ in shown
        ]
        if rest:
            mask = np.isin(self.label_map, [i for i, _ in rest]).astype(np.float32) * ANNOTATION_ALPHA
            entries.append((mask, f"{len(rest)} smaller classes"))
        return entries

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
        model_path = str(model_path)
        if not Path(model_path).exists() and not _looks_like_hub_id(model_path):
            raise ModelNotFoundError(missing_model_message(model_path, "no such folder"))
        try:
            model, processor = _load_model_and_processor(model_path)
        except Exception as err:  # offline Hub id, folder without weights, ...
            logger.warning("Could not load %s: %s", model_path, err)
            reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            raise ModelNotFoundError(missing_model_message(model_path, reason)) from err
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
                problems.append(str(err.args[0]) if err.args else f"Unknown class name {name!r}.")
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
        top_k: int = 5,
        coseg: bool = False,
        sliding: bool = False,
    ) -> Segmentation:
        start = time.perf_counter()
        rgb, notes = open_image(image)
        mode = mode or MODE_ALL
        if mode not in MODES:
            raise DemoError(f"Unknown vocabulary mode {mode!r}; choose one of {', '.join(MODES)}.")
        if mode == MODE_SOME:
            label_map = self.predict(rgb, self.resolve(classes), coseg, sliding)
        elif mode == MODE_TOPK:
            try:
                k = int(top_k)
            except (TypeError, ValueError) as err:
                raise DemoError(f"k must be a whole number, got {top_k!r}.") from err
            if k < 1:
                raise DemoError(f"k must be at least 1, got {k}.")
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
        return Segmentation(rgb, label_map, self.id2label, notes, time.perf_counter() - start)


# ------------------------------------------------------------------------------------------- UI


def _status(segmentation: Segmentation, mode: str, coseg: bool, sliding: bool) -> str:
    areas = segmentation.areas()
    options = [mode] + (["attentive (coseg)"] if coseg else []) + (["sliding window"] if sliding else [])
    lines = [
        f"**{len(areas)} classes** in {segmentation.image.width}x{segmentation.image.height} px, "
        f"{segmentation.seconds:.2f} s ({', '.join(options)}). Largest: "
        + ", ".join(
            f"{segmentation.name(i)} ({100 * c / segmentation.label_map.size:.1f}%)" for i, c in areas[:3]
        )
    ]
    if len(areas) > MAX_LEGEND:
        lines.append(
            f"- The overlay names the {MAX_LEGEND - 1} largest classes and groups the other "
            f"{len(areas) - MAX_LEGEND + 1}; the table and the label map have them all."
        )
    lines += [f"- {note}" for note in segmentation.notes]
    return "\n".join(lines)


def _empty_outputs(message: str) -> tuple:
    return None, pd.DataFrame(columns=TABLE_COLUMNS), None, message


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
) -> tuple:
    """One click of "Segment" (and the /segment API): (overlay, area table, label-map file, status).
    Every failure becomes a message in the status (and a toast), never a stack trace."""
    if demo is None:
        return _empty_outputs(f"**Model not loaded.** {load_error or ''}")
    mode = mode or MODE_ALL
    coseg, sliding = bool(coseg), bool(sliding)
    try:
        segmentation = demo.segment(payload_to_source(image), mode, classes, top_k or 5, coseg, sliding)
        file_path = segmentation.save_label_map(output_dir, "larvseg_label_map")
    except DemoError as err:
        if notify:
            gr.Warning(str(err).splitlines()[0][:300])
        return _empty_outputs(f"**Could not segment:**\n\n{err}")
    except Exception as err:  # a bug or resource problem: log it, but keep the page readable
        logger.exception("Segmentation failed")
        if notify:
            gr.Warning(f"Segmentation failed: {type(err).__name__}")
        return _empty_outputs(f"**Segmentation failed:** {type(err).__name__}: {err}")
    # A plain value, not a gr.AnnotatedImage(...) update: an update would reach API clients as
    # {"value": ..., "color_map": ...}. Without a color_map the page spreads mask hues evenly.
    overlay = (segmentation.image, segmentation.annotations())
    return overlay, segmentation.area_table(), str(file_path), _status(segmentation, mode, coseg, sliding)


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
    """The Space's page for a model folder or Hub id (default: $LARVSEG_MODEL or outputs/larvseg-emoji)."""
    model_path = str(model_path or default_model_path())
    demo_model: LarvSegDemo | None = None
    load_error: str | None = None
    try:
        demo_model = LarvSegDemo.load(model_path)
    except ModelNotFoundError as err:
        load_error = str(err)
        logger.warning("%s", load_error.replace("\n\n", " ").replace("```bash\n", "").replace("\n```", ""))
    output_dir = Path(tempfile.gettempdir()) / "larvseg_demo"
    output_dir.mkdir(parents=True, exist_ok=True)

    names = demo_model.names if demo_model else []
    examples = find_examples(model_path) if demo_model else []

    def run(image, mode, classes, top_k, coseg, sliding):
        _prune(output_dir)
        return segment_request(
            demo_model, load_error, output_dir, image, mode, classes, top_k, coseg, sliding
        )

    with gr.Blocks(title="LarvSeg demo", delete_cache=(3600, 3600)) as blocks:
        gr.Markdown(INTRO)
        if demo_model is None:
            gr.Markdown(f"### Model not found\n{load_error}", elem_id="model-missing")
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
                classes = gr.Dropdown(
                    choices=names,
                    value=[],
                    multiselect=True,
                    allow_custom_value=True,
                    filterable=True,
                    label="These classes",
                    info=f'Search the {len(names):,} names; used in the "{MODE_SOME}" mode.',
                )
                top_k = gr.Slider(1, 50, value=5, step=1, label="k (top-k found)")
                with gr.Row():
                    coseg = gr.Checkbox(label="Attentive (coseg) inference", value=False)
                    sliding = gr.Checkbox(label="Sliding-window inference", value=False)
                button = gr.Button("Segment", variant="primary", interactive=demo_model is not None)
            with gr.Column(scale=1):
                overlay = gr.AnnotatedImage(label="Segmentation", show_legend=True, height=360)
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
        if examples:
            gr.Examples(examples=[[path] for path in examples], inputs=[image], label="Benchmark eval scenes")
        button.click(
            run,
            inputs=[image, mode, classes, top_k, coseg, sliding],
            outputs=[overlay, table, label_file, status],
            api_name="segment",  # the endpoint /segment
            preprocess=False,  # raw upload payloads: non-images get our message, not a preprocess error
            concurrency_limit=1,  # CPU inference: one at a time, the rest wait in the queue
        )
    blocks.queue(default_concurrency_limit=1, max_size=64)
    return blocks


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="LarvSeg Gradio demo")
    parser.add_argument(
        "--model",
        default=default_model_path(),
        help="Model folder or Hub id (default: $LARVSEG_MODEL, else outputs/larvseg-emoji).",
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
