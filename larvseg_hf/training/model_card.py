"""Render the model card that save/push writes next to the weights (template: model_cards/larvseg_model_card.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from string import Template
from typing import Any

# model_cards/larvseg_model_card.md, linked into the package so that wheels ship it.
DEFAULT_TEMPLATE = Path(__file__).resolve().parent / "model_card_template.md"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.4f}"
    return "n/a" if value is None else str(value)


def vocabulary_summary(class_names: Sequence[str], base_ids: Sequence[int], max_names: int = 40) -> str:
    base = set(base_ids)
    base_names = [n for i, n in enumerate(class_names) if i in base]
    novel_names = [n for i, n in enumerate(class_names) if i not in base]

    def listing(names: list[str]) -> str:
        shown = ", ".join(f"`{n}`" for n in names[:max_names])
        return shown + (f", … ({len(names) - max_names} more)" if len(names) > max_names else "")

    return (
        f"Base ({len(base_names)}): {listing(base_names)}\n\n"
        f"Novel ({len(novel_names)}): {listing(novel_names)}\n\n"
        "The full list is `config.id2label`."
    )


def render_model_card(
    config: Any,
    metrics: Mapping[str, Any],
    *,
    repo_id: str,
    mask_data: str,
    image_data: str,
    eval_dataset_name: str,
    num_eval_images: int | None = None,
    training: Mapping[str, Any] | None = None,
    data_credit: str = "",
    datasets: Sequence[str] = (),
    template: str | Path | None = None,
) -> str:
    """Fill the template; raises KeyError naming any placeholder left without a value."""
    training = dict(training or {})
    class_names = config.class_names
    base_ids = list(config.base_label_ids or [])
    backbone = config.backbone_config
    values = {
        "model_name": repo_id.split("/")[-1],
        "repo_id": repo_id,
        "num_classes": config.num_labels,
        "num_base": len(base_ids),
        "num_novel": config.num_labels - len(base_ids),
        "num_classes_present": metrics.get("num_classes_present", "n/a"),
        "miou_all": _fmt(metrics.get("mean_iou")),
        "miou_base": _fmt(metrics.get("base_mean_iou")),
        "miou_novel": _fmt(metrics.get("novel_mean_iou")),
        "overall_accuracy": _fmt(metrics.get("overall_accuracy")),
        "mean_accuracy": _fmt(metrics.get("mean_accuracy")),
        "eval_dataset_name": eval_dataset_name,
        "eval_dataset_id": eval_dataset_name.replace(" ", "-").lower(),
        "num_eval_images": _fmt(num_eval_images),
        "eval_note": ", coseg inference" if training.get("eval_coseg") else "",
        "vocabulary_summary": vocabulary_summary(class_names, base_ids),
        "mask_data": mask_data,
        "image_data": image_data,
        "backbone": f"{backbone.model_type} ({type(backbone).__name__})",
        "head_hidden_size": config.head_hidden_size or "backbone width",
        "train_steps": _fmt(training.get("steps")),
        "optimizer": _fmt(training.get("optimizer")),
        "learning_rate": _fmt(training.get("learning_rate")),
        "lr_scheduler": _fmt(training.get("lr_scheduler")),
        "data_credit": data_credit,
        "datasets_front_matter": ("datasets:\n" + "\n".join(f"- {d}" for d in datasets)) if datasets else "",
    }
    for name in (
        "supervised_loss_weight",
        "image_loss_weight",
        "attentive_loss_weight",
        "memory_bank_size",
        "memory_bank_topk",
        "memory_bank_warmup",
    ):
        values[name] = getattr(config, name)
    text = Path(template or DEFAULT_TEMPLATE).read_text()
    return Template(text).substitute(values)
