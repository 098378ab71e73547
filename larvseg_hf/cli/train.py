"""`larvseg-train`: train a LarvSeg model on mixed mask + image-level data.

    larvseg-train                                             # built-in emoji-scenes benchmark
    accelerate launch -m larvseg_hf.cli.train --config setup.yaml
    accelerate launch scripts/train.py \\
        --mask_datasets scene_parse_150 --image_datasets imagenet-1k:train \\
        --backbone_name_or_path google/vit-base-patch16-224-in21k --output_dir out

Datasets are Hub names or local imagefolders (NAME[:SPLIT]). See README.md for every option.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import transformers
from transformers import set_seed
from transformers.trainer_utils import get_last_checkpoint

from larvseg_hf.data.collate import LarvSegCollator
from larvseg_hf.metrics.reports import PER_CLASS_CSV, PER_CLASS_PNG, plot_per_class_iou, write_per_class_csv
from larvseg_hf.training.arguments import parse_train_args
from larvseg_hf.training.model_card import render_model_card
from larvseg_hf.training.record import TrainingRecord
from larvseg_hf.training.setup import (
    build_image_processor,
    build_model,
    build_train_dataset,
    load_training_data,
    validate_training_data,
)
from larvseg_hf.training.trainer import LarvSegTrainer

logger = logging.getLogger("larvseg.train")


def main(argv: list[str] | None = None) -> None:
    """Console entry (`larvseg-train`); `argv` defaults to the command line."""
    run(argv)


def run(argv: list[str] | None = None) -> dict[str, float]:
    """Train as the command line says and return the final evaluation metrics."""
    model_args, data_args, training_args, eval_args = parse_train_args(argv)
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if training_args.should_log else logging.WARNING,
    )
    transformers.utils.logging.set_verbosity_warning()
    set_seed(training_args.seed)

    with training_args.main_process_first(desc="building datasets"):
        data = load_training_data(data_args, show_progress=training_args.local_process_index == 0)
    logger.info(
        "vocabulary: %d classes (%d base, %d novel); sources: %s",
        len(data.class_names),
        len(data.base_ids),
        len(data.novel_ids),
        ", ".join(f"{s.name} ({s.kind})" for s in data.sources),
    )

    # Every process checks every source, so that a bad row stops all of them at once, before step 1.
    validate_training_data(
        data, data_args.validate_rows, show_progress=training_args.local_process_index == 0
    )

    model = build_model(model_args, data)
    # Saved next to the model; the training transforms rescale and normalise as it does.
    processor = build_image_processor(model_args, data_args, model)
    world = training_args.world_size
    steps = training_args.max_steps if training_args.max_steps > 0 else None
    per_step = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps * world
    length = steps * per_step if steps else None
    train_dataset = build_train_dataset(
        data, data_args, training_args.seed, length, training_args.process_index, world, processor
    )

    trainer = LarvSegTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        data_collator=LarvSegCollator(
            model.config.num_labels, model.config.ignore_index, source_names=list(data.source_vocabularies)
        ),
        processing_class=processor,
        segmentation_eval_rows=data.eval_rows,
        segmentation_eval_size=data_args.eval_size,
        base_ids=data.base_ids,
        novel_ids=data.novel_ids,
        eval_coseg=eval_args.eval_coseg,
    )

    checkpoint = training_args.resume_from_checkpoint
    if checkpoint is None and Path(training_args.output_dir).is_dir():
        checkpoint = get_last_checkpoint(training_args.output_dir)
        if checkpoint:
            logger.info("resuming from %s", checkpoint)
    result = trainer.train(resume_from_checkpoint=checkpoint)
    # Save without Trainer's own push: with --push_to_hub, save_model() would upload at once with the generic
    # Trainer model card. The one push is below, after evaluation, with the LarvSeg card.
    trainer.save_model(_internal_call=True)
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()

    metrics: dict[str, float] = {}
    if data.eval_rows is not None:
        metrics = trainer.evaluate()
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)

    if trainer.is_world_process_zero():
        output_dir = Path(training_args.output_dir)
        repo_id = training_args.hub_model_id or output_dir.name
        card = render_model_card(
            model.config,
            {k.removeprefix("eval_"): v for k, v in metrics.items()},
            repo_id=repo_id,
            mask_data=data.description.get("mask_data", ""),
            image_data=data.description.get("image_data", ""),
            eval_dataset_name=data.description.get("eval_data", "none"),
            num_eval_images=data.num_eval,
            training={
                "steps": trainer.state.global_step,
                "optimizer": training_args.optim,
                "learning_rate": training_args.learning_rate,
                "lr_scheduler": training_args.lr_scheduler_type,
                "eval_coseg": eval_args.eval_coseg,
            },
            data_credit=data.credit,
            template=eval_args.model_card_template,
        )
        trainer.model_card_text = card
        (output_dir / "README.md").write_text(card)
        TrainingRecord.from_dict(
            {"base_ids": data.base_ids, "novel_ids": data.novel_ids, **data.description}
        ).save(output_dir)
        if trainer.segmentation_histograms is not None:  # the final evaluation's, as larvseg-evaluate writes
            per_class = trainer.segmentation_histograms.per_class()
            write_per_class_csv(output_dir / PER_CLASS_CSV, per_class, data.class_names, data.base_ids)
            plot_per_class_iou(output_dir / PER_CLASS_PNG, per_class, data.class_names, data.base_ids)
    if training_args.push_to_hub:
        trainer.push_to_hub(commit_message="LarvSeg model trained with larvseg-hf")

    if trainer.is_world_process_zero():
        summary = {k: metrics.get(f"eval_{k}") for k in ("mean_iou", "base_mean_iou", "novel_mean_iou")}
        print(
            "\nLarvSeg training done. "
            + "  ".join(f"{k}={_fmt(v)}" for k, v in summary.items())
            + f"\nModel saved to {Path(training_args.output_dir).resolve()}"
        )
    return metrics


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


if __name__ == "__main__":
    main()
