"""LarvSeg demo: large-vocabulary semantic segmentation in the browser (a Gradio Space).

    python demo/app.py --model outputs/larvseg-emoji      # http://127.0.0.1:7860
    python demo/app.py --model your-org/larvseg-model --host 0.0.0.0 --port 7860

The model defaults to $LARVSEG_MODEL, else `outputs/larvseg-emoji` in the working directory (where
`larvseg-train` saves it), else, in a checkout, under the repository root (where `bash scripts/run_main.sh`
saves it). A missing or corrupt model is reported in the page, not raised.

This file is the page only: loading and segmenting are `larvseg_hf.load_model_and_processor` and
`larvseg_hf.predict`. `segment_ui` serves the page (component updates with the overlay's colours),
`segment_request` the /segment API (plain values); `build_demo(model_path)` returns the `gr.Blocks`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import importlib
import importlib.util
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
import torch

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent  # the checkout, when this file is demo/app.py in one


def _space_module(name: str) -> ModuleType:
    """larvseg_space.<name>: larvseg_space/ next to this file links the package modules this page needs,
    for a Space that has only transformers and torch installed."""
    if "larvseg_space" not in sys.modules:
        folder = HERE / "larvseg_space"
        spec = importlib.util.spec_from_file_location(
            "larvseg_space", folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        sys.modules["larvseg_space"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["larvseg_space"])
    return importlib.import_module(f"larvseg_space.{name}")


try:
    from larvseg_hf import model_loading, prediction

    REMOTE_CODE = False
except ImportError:  # a Space: the model is loaded with the code saved next to its weights
    model_loading, prediction, REMOTE_CODE = _space_module("model_loading"), _space_module("prediction"), True

Segmentation = prediction.Segmentation

logger = logging.getLogger("larvseg_demo")

DEFAULT_MODEL_DIR = Path("outputs") / "larvseg-emoji"  # where larvseg-train / run_main.sh save the model
ADVICE = model_loading.LoadAdvice(
    retry="restart the demo", switch="pass another model with `python demo/app.py --model PATH_OR_HUB_ID`"
)
ERROR_ELEM_IDS = {
    model_loading.ModelNotFoundError: "model-missing",
    model_loading.ModelCorruptError: "model-corrupt",
}
MODE_ALL, MODE_SOME, MODE_TOPK = "all classes", "these classes", "top-k found"
MODES = (MODE_ALL, MODE_SOME, MODE_TOPK)
TABLE_COLUMNS = ["class", "id", "pixels", "% of image"]
ANNOTATION_ALPHA = 0.55  # mask opacity in the overlay
MAX_LEGEND = 20  # overlay entries; smaller classes beyond these share one entry
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


# ------------------------------------------------------------------------------------------- model


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


def find_examples(model_path: str | Path, limit: int = 6) -> list[str]:
    """Eval scenes of the built-in benchmark the model was trained on (its training record's "root"),
    images only (label maps excluded); none when the model does not name a local benchmark."""
    if REMOTE_CODE:  # a Space: no training record reader, and no benchmark on disk
        return []
    from larvseg_hf.training.record import TrainingRecord

    try:
        eval_dir = TrainingRecord.read(model_path).builtin_eval_dir
    except (OSError, ValueError):  # no record, or one that does not parse
        return []
    if eval_dir is None:
        return []
    from larvseg_hf.data.emoji_scenes import split_images

    try:
        images = split_images(eval_dir)
    except (OSError, ValueError):  # the benchmark's folder was moved or damaged: no examples, not a crash
        return []
    return [str(p) for p in images[:limit]]


class LarvSegDemo:
    """The loaded model and the page's vocabulary modes, over `larvseg_hf.predict`."""

    def __init__(self, model: torch.nn.Module, processor: Any):
        self.model = model.eval()
        self.processor = processor
        self.names = list(model.class_names)

    @classmethod
    def load(cls, model_path: str | Path) -> LarvSegDemo:
        """Raises ModelNotFoundError (nothing to load) or ModelCorruptError (files there but broken)."""
        return cls(
            *model_loading.load_model_and_processor(model_path, trust_remote_code=REMOTE_CODE, advice=ADVICE)
        )

    def requested_names(self, names: Sequence[str] | str | None) -> list[str]:
        """The names picked or typed; an entry that is not a name but holds commas is split ("cat, dog")."""
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
        return wanted

    def resolve(self, names: Sequence[str] | str | None) -> list[int]:
        """Class names -> vocabulary ids. Unknown names raise DemoError listing the closest known names."""
        try:
            return prediction.resolve_classes(self.model, self.requested_names(names))
        except prediction.PredictionError as err:
            raise DemoError(str(err)) from err

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
        mode = mode or MODE_ALL
        if mode not in MODES:
            raise DemoError(f"Unknown vocabulary mode {mode!r}; choose one of {', '.join(MODES)}.")
        k = parse_top_k(top_k)
        if image is None:
            raise DemoError("Upload an image first.")
        try:
            return prediction.predict(
                self.model,
                self.processor,
                image,
                classes=self.requested_names(classes) if mode == MODE_SOME else None,
                top_k=k if mode == MODE_TOPK else None,
                coseg=bool(coseg),
                sliding=bool(sliding),
            )
        except prediction.PredictionError as err:
            raise DemoError(str(err)) from err


def parse_top_k(top_k: Any) -> int:
    """k of "top-k found": a whole number >= 1. Checked in every mode, so that a bad k sent to the API
    is an error rather than silently replaced (0 used to become 5)."""
    try:
        value = None if isinstance(top_k, bool) or top_k is None else float(top_k)
    except (TypeError, ValueError):
        value = None
    if value is None or not value.is_integer():
        raise DemoError(f"k (top-k found) must be a whole number of at least 1, got {top_k!r}.")
    if value < 1:
        raise DemoError(f"k (top-k found) must be at least 1, got {int(value)}.")
    return int(value)


def payload_to_source(payload: Any) -> Any:
    """The Image component's raw payload (the event runs with preprocess=False, so that a non-image upload
    reaches our own error message instead of a failing preprocess) -> something `predict` reads.
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


def merge_classes(selected: Any, typed: Any) -> list[str]:
    """Names picked in the dropdown plus the comma-separated names typed into the text box."""
    names = [str(name) for name in (selected if isinstance(selected, list | tuple) else [selected]) if name]
    if isinstance(typed, str) and typed.strip():
        names.append(typed)  # LarvSegDemo.requested_names splits it at commas
    return names


# ------------------------------------------------------------------------------------------- rendering


def mode_of(segmentation: Segmentation) -> str:
    if segmentation.top_k is not None:
        return MODE_TOPK
    return MODE_ALL if segmentation.classes is None else MODE_SOME


def others_label(count: int) -> str:
    return f"{count} smaller classes"


def _legend_ids(
    segmentation: Segmentation, show_background: bool, max_entries: int
) -> tuple[list[int], list[int]]:
    """(ids with their own legend entry, ids grouped into one), largest first."""
    ids = [i for i, _ in segmentation.areas() if show_background or not segmentation.is_background(i)]
    if len(ids) > max_entries:
        return ids[: max_entries - 1], ids[max_entries - 1 :]
    return ids, []


def annotations(
    segmentation: Segmentation, max_entries: int = MAX_LEGEND, show_background: bool = False
) -> list[tuple[np.ndarray, str]]:
    """AnnotatedImage legend: (mask in [0, 1], class name) for the largest classes, largest first.

    Background is left out unless `show_background` (painted, it hides the image it surrounds). Past
    `max_entries` entries the smallest classes share one ("N smaller classes"): every entry is a full-size
    mask the server encodes and the page downloads, and a legend of hundreds is unreadable."""
    shown, rest = _legend_ids(segmentation, show_background, max_entries)
    label_map = segmentation.label_map
    entries = [((label_map == i).astype(np.float32) * ANNOTATION_ALPHA, segmentation.name(i)) for i in shown]
    if rest:
        entries.append(
            (np.isin(label_map, rest).astype(np.float32) * ANNOTATION_ALPHA, others_label(len(rest)))
        )
    return entries


def color_map(
    segmentation: Segmentation, show_background: bool = False, max_entries: int = MAX_LEGEND
) -> dict[str, str]:
    """Legend label -> colour: PALETTE in order of size for the classes (largest first, background
    skipped), greys for background and for the grouped smaller classes."""
    shown, rest = _legend_ids(segmentation, show_background, max_entries)
    colors: dict[str, str] = {}
    rank = 0
    for class_id in shown:
        if segmentation.is_background(class_id):
            colors[segmentation.name(class_id)] = BACKGROUND_COLOR
        else:
            colors[segmentation.name(class_id)] = PALETTE[rank % len(PALETTE)]
            rank += 1
    if rest:
        colors[others_label(len(rest))] = OTHERS_COLOR
    return colors


def area_table(segmentation: Segmentation) -> pd.DataFrame:
    """class, id, pixels, % of image (the column adds up to exactly 100), largest first."""
    areas, percentages = segmentation.areas(), segmentation.area_percentages()
    rows = [[segmentation.name(i), i, c, p] for (i, c), p in zip(areas, percentages, strict=True)]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def _status(segmentation: Segmentation, show_background: bool = False) -> str:
    """The Markdown under the overlay: classes found, time, settings, the largest classes, notes."""
    areas = segmentation.areas()
    options = (
        [mode_of(segmentation)]
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


# ------------------------------------------------------------------------------------------- events


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
    overlay = (segmentation.image, annotations(segmentation, show_background=bool(show_background)))
    return overlay, area_table(segmentation), file_path, _status(segmentation, bool(show_background))


def overlay_update(segmentation: Segmentation, show_background: bool = False) -> dict:
    """The overlay with its colours: PALETTE largest-first, so the big classes are the distinct ones."""
    show_background = bool(show_background)
    return gr.update(
        value=(segmentation.image, annotations(segmentation, show_background=show_background)),
        color_map=color_map(segmentation, show_background=show_background),
    )


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
        area_table(segmentation),
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


# ------------------------------------------------------------------------------------------- page

INTRO = """# LarvSeg: large-vocabulary semantic segmentation
Upload an image and press **Segment**. LarvSeg scores every pixel against the model's whole vocabulary,
including categories that were only ever seen with image-level labels
([paper](https://arxiv.org/abs/2501.06862)).
"""


def build_demo(model_path: str | Path | None = None) -> gr.Blocks:
    """The Space's page for a model folder or Hub id (default: see `default_model_path`)."""
    model_path = str(model_path or default_model_path())
    demo_model: LarvSegDemo | None = None
    load_error: model_loading.ModelLoadError | None = None
    try:
        demo_model = LarvSegDemo.load(model_path)
    except model_loading.ModelLoadError as err:
        load_error = err
        text = str(err).replace("\n\n", " ").replace("```bash\n", "").replace("\n```", "")
        logger.warning("%s: %s", err.heading, text)
    error_text = str(load_error) if load_error else None
    output_dir = Path(tempfile.gettempdir()) / "larvseg_demo"
    output_dir.mkdir(parents=True, exist_ok=True)

    names = demo_model.names if demo_model else []
    examples = find_examples(model_path) if demo_model else []

    context = (demo_model, error_text, output_dir)

    def segment_page(image, mode, classes, typed, top_k, coseg, sliding, show_background):
        _prune(output_dir)
        return segment_ui(*context, image, mode, classes, typed, top_k, coseg, sliding, show_background)

    def segment(image, mode, classes, top_k, coseg, sliding, show_background):  # names the API parameters
        _prune(output_dir)
        return segment_request(
            *context, image, mode, classes, top_k, coseg, sliding, show_background=show_background
        )

    with gr.Blocks(title="LarvSeg demo", delete_cache=(3600, 3600)) as blocks:
        gr.Markdown(INTRO)
        if load_error is not None:
            gr.Markdown(
                f"### {load_error.heading}\n{load_error}",
                elem_id=ERROR_ELEM_IDS.get(type(load_error), "model-error"),
            )
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
