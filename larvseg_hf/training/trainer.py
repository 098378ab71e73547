"""Trainer for LarvSeg: the model's own loss (mixed mask + image-level batches, possibly split in
groups of equal crop size), the three loss terms logged separately, and mIoU evaluation."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import gather_object
from transformers import Trainer

from ..evaluation import evaluate_segmentation
from ..head_larvseg import LarvSegMaskNorm
from ..image_processing_larvseg import LarvSegImageProcessor
from ..metrics import SegmentationMetrics, scalar_results

LOSS_TERMS = ("supervised_loss", "image_level_loss", "attentive_loss")
NO_DECAY_KEYWORDS = ("position_embeddings", "cls_token", "mask_token", "mask_norm.", "norm", "bias")


class LarvSegTrainer(Trainer):
    """`Trainer` whose evaluation is segmentation mIoU (overall / base / novel) rather than a loss.

    `evaluate()` logs and returns the scalar results of the `larvseg_mean_iou` evaluate module (mean_iou,
    mean_accuracy, overall_accuracy, base_mean_iou, novel_mean_iou, num_classes_present, with the key
    prefix), so log_history, trainer_state.json and eval_results.json stay small at any vocabulary size; the
    full results, with the per_category_iou / per_category_accuracy arrays, are kept in
    `self.segmentation_results` (unprefixed) after each evaluation, its per-class histograms (for the per-class
    CSV and plot) in `self.segmentation_histograms`.
    """

    def __init__(
        self,
        *args,
        segmentation_eval_rows: Callable[[], Any] | None = None,
        segmentation_eval_size: int | None = None,
        base_ids: Sequence[int] | None = None,
        novel_ids: Sequence[int] | None = None,
        eval_coseg: bool = False,
        **kwargs,
    ):
        training_args = kwargs.get("args", args[1] if len(args) > 1 else None)
        if training_args is not None:
            # Samples carry `image_label_ids`, which the collator turns into `image_labels`; the default
            # column removal would strip them before collation and silently drop every image-level label.
            training_args.remove_unused_columns = False
        super().__init__(*args, **kwargs)
        self.segmentation_eval_rows = segmentation_eval_rows
        self.segmentation_eval_size = segmentation_eval_size
        self.base_ids = base_ids
        self.novel_ids = novel_ids
        self.eval_coseg = eval_coseg
        self.model_card_text: str | None = None
        self.segmentation_results: dict[str, Any] | None = None
        self.segmentation_histograms: SegmentationMetrics | None = None
        self._term_sums = torch.zeros(len(LOSS_TERMS))
        self._term_count = 0

    def create_model_card(self, *args, **kwargs) -> None:
        """push_to_hub writes the LarvSeg card (rendered from model_cards/) instead of the generic one."""
        if self.model_card_text is None:
            return super().create_model_card(*args, **kwargs)
        if self.is_world_process_zero():
            (Path(self.args.output_dir) / "README.md").write_text(self.model_card_text)

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        # Checkpoint pushes copy weights and config only; the config's auto_map also needs the code files,
        # or the Hub repo cannot be loaded with trust_remote_code until the final push.
        if self.is_world_process_zero():
            for code_file in Path(checkpoint_folder).glob("*.py"):
                shutil.copy(code_file, Path(self.args.output_dir) / code_file.name)
        super()._push_from_checkpoint(checkpoint_folder)

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        """Trainer's optimizer, with the two mask-norm scalars in a group of their own at
        `args.mask_norm_lr_multiplier` times the learning rate (1 = no change)."""
        optimizer = super().create_optimizer(model)  # the existing one on a second call (train() again)
        multiplier = getattr(self.args, "mask_norm_lr_multiplier", 1.0)
        if multiplier == 1.0 or any(group.get("name") == "mask_norm" for group in optimizer.param_groups):
            return optimizer
        opt_model = self.model if model is None else model
        scalars = {
            id(p)
            for module in opt_model.modules()
            if isinstance(module, LarvSegMaskNorm)
            for p in module.parameters()
            if p.requires_grad
        }
        moved = []
        for group in optimizer.param_groups:
            moved += [p for p in group["params"] if id(p) in scalars]
            group["params"] = [p for p in group["params"] if id(p) not in scalars]
        if moved:
            optimizer.add_param_group(
                {
                    "params": moved,
                    "weight_decay": 0.0,
                    "lr": optimizer.defaults["lr"] * multiplier,
                    "name": "mask_norm",
                }
            )
        return optimizer

    def get_decay_parameter_names(self, model: torch.nn.Module) -> list[str]:
        """No weight decay on position embeddings, cls token, norms, biases and the mask-norm scalars (METHOD.md)."""
        names = super().get_decay_parameter_names(model)
        return [n for n in names if not any(key in n for key in NO_DECAY_KEYWORDS)]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        groups = inputs["groups"] if "groups" in inputs else [inputs]
        total = None
        outputs = None
        for group in groups:  # at most one group per crop size (mask data, image-level data)
            # A training step needs the loss alone; evaluation's prediction step asks for the outputs.
            outputs = model(**group, output_logits=return_outputs)
            total = outputs["loss"] if total is None else total + outputs["loss"]
            self._term_sums += torch.stack([outputs[name].detach().float().cpu() for name in LOSS_TERMS])
        self._term_count += 1
        return (total, outputs) if return_outputs else total

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._term_count and "loss" in logs:
            means = self._term_sums / self._term_count
            if self.accelerator.num_processes > 1:
                means = self.accelerator.reduce(means.to(self.accelerator.device), reduction="mean").cpu()
            logs.update({name: round(float(v), 4) for name, v in zip(LOSS_TERMS, means, strict=True)})
            self._term_sums.zero_()
            self._term_count = 0
            logs["bank_checksum"] = self._checked_bank_checksum()
            model = self.accelerator.unwrap_model(self.model)
            logs["mask_norm_gamma"] = round(model.head.mask_norm.gamma.detach().item(), 4)
            logs["mask_norm_beta"] = round(model.head.mask_norm.beta.detach().item(), 4)
        super().log(logs, start_time)

    def _checked_bank_checksum(self) -> float:
        """A fingerprint of the memory bank; with several processes, raise if their banks differ
        (every process must enqueue the same gathered slots, or attention silently drifts apart)."""
        bank = self.accelerator.unwrap_model(self.model).memory_bank
        fingerprint = torch.stack(
            [bank.slots.double().sum(), (bank.slots.double() ** 2).sum(), bank.num_writes.double().sum()]
        )
        if self.accelerator.num_processes > 1:
            gathered = self.accelerator.gather(fingerprint.to(self.accelerator.device)[None]).cpu()
            if not torch.allclose(gathered, gathered[:1].expand_as(gathered), rtol=1e-9, atol=0):
                raise RuntimeError(f"Memory banks differ across processes: fingerprints {gathered.tolist()}")
        return round(float(fingerprint[0] + fingerprint[1] + fingerprint[2]), 6)

    def evaluate(
        self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        if self.segmentation_eval_rows is None:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        model = self.accelerator.unwrap_model(self.model)
        config = model.config
        size = self.segmentation_eval_size or 512
        processor = (
            self.processing_class if isinstance(self.processing_class, LarvSegImageProcessor) else None
        )
        processor = processor or LarvSegImageProcessor(size={"height": size, "width": size})
        rows = self.segmentation_eval_rows()
        # Each process scores its own shard; every process then gathers all shards' sparse rows into its own
        # in-memory metric, so all compute the single-process results (no evaluate file-lock rendezvous).
        rank, world = self.accelerator.process_index, self.accelerator.num_processes
        if world > 1:
            # Parameters are synchronised, buffers are not: each process's last training forward updated its own
            # BatchNorm running statistics. Score every shard with the model that is saved (rank 0's).
            for buffer in model.buffers():
                torch.distributed.broadcast(buffer.data, src=0)
        shard = (row for i, row in enumerate(rows) if i % world == rank)
        results, histograms = evaluate_segmentation(
            model,
            processor,
            shard,
            num_classes=config.num_labels,
            base_ids=self.base_ids,
            novel_ids=self.novel_ids,
            ignore_index=config.ignore_index,
            coseg=self.eval_coseg,
            show_progress=self.accelerator.is_local_main_process,
            gather=gather_object if world > 1 else None,
        )
        self.segmentation_results = results
        self.segmentation_histograms = histograms
        metrics = {f"{metric_key_prefix}_{k}": v for k, v in scalar_results(results).items()}
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


__all__ = ["LarvSegTrainer"]
