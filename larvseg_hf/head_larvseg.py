# Copyright 2026 The larvseg-hf authors. Licensed under the Apache License, Version 2.0.
"""LarvSeg's segmentation head: backbone features -> normalised pixel features z, class vectors c, raw
cosine scores s = z . c and the mask-normed logits (METHOD.md, "cosine classifier" and "mask norm")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_larvseg import LarvSegConfig


def mask_norm(
    scores: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    class_mask: torch.Tensor | None = None,
    eps: float = 1e-5,
    moments: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Standardise each pixel's raw cosine scores across the columns in use, then scale and shift.
    `moments`: each pixel's (mean, variance) over the columns, (B, 1, h, w) each, when known already."""
    if class_mask is not None:
        weight = class_mask.to(scores.dtype)[:, :, None, None]
        count = weight.sum(1, keepdim=True).clamp(min=1)
        mean = (scores * weight).sum(1, keepdim=True) / count
        var = (((scores - mean) * weight) ** 2).sum(1, keepdim=True) / count
        return gamma * (scores - mean) / torch.sqrt(var + eps) + beta
    if moments is not None:
        # The whole vocabulary at inference: one fused multiply-add over N x h x w.
        mean, var = moments
        scale = gamma * torch.rsqrt(var + eps)
        return torch.addcmul(beta - mean * scale, scores, scale)
    # Over every column mask norm is a layer norm across the channel axis with one scalar gain and bias: its
    # fused kernel and backward, on the (B, h, w, K) layout the scores' einsum writes. (On CPU torch.var_mean's
    # Welford pass alone takes over 10x as long as the whole layer norm.)
    num_columns = scores.shape[1]
    normed = F.layer_norm(
        scores.permute(0, 2, 3, 1),
        (num_columns,),
        gamma.to(scores.dtype).expand(num_columns),
        beta.to(scores.dtype).expand(num_columns),
        eps,
    )
    return normed.permute(0, 3, 1, 2)


# classify takes a pixel's mask-norm moments from the class covariance (d x d work) instead of its K scores
# when K exceeds this many times d.
_MOMENTS_FROM_COVARIANCE_ABOVE = 4


class _NeckThenProjection(torch.autograd.Function):
    """P (N x + b) for every pixel x of feature maps (B, C, X), returned pixel-major (B, X, d): the 1x1 neck N,
    b and the pixel projection P are two linear maps with nothing between them. The forward is one batched
    product with P N that reads the maps in their own layout (NCHW or channels-last, no transposing copy);
    the backward computes gz^T x once for the gradients of both weights (dN = P^T gz^T x, dP = gz^T x N^T +
    (gz^T 1) b^T): three products of n x d x C size instead of six, with the gradients of the two separate
    parameters unchanged."""

    @staticmethod
    def forward(ctx, maps, neck_weight, neck_bias, projection):
        device_type = maps.device.type
        if torch.is_autocast_enabled(device_type):
            # The dtype autocast gives the 1x1 conv and the linear layer this replaces, for every operand, so
            # that the backward (which runs outside autocast) multiplies tensors of one dtype.
            dtype = torch.get_autocast_dtype(device_type)
            maps, neck_weight, neck_bias, projection = (
                t.to(dtype) for t in (maps, neck_weight, neck_bias, projection)
            )
        combined = projection @ neck_weight  # (d, C)
        ctx.save_for_backward(maps, neck_weight, neck_bias, projection, combined)
        batch, _, pixels = maps.shape
        bias = (projection @ neck_bias).expand(batch, pixels, -1)
        return torch.baddbmm(bias, maps.transpose(1, 2), combined.T.expand(batch, -1, -1))

    @staticmethod
    def backward(ctx, grad):
        maps, neck_weight, neck_bias, projection, combined = ctx.saved_tensors
        grad_maps = torch.matmul(combined.T, grad.transpose(1, 2)) if ctx.needs_input_grad[0] else None
        outer = torch.bmm(grad.transpose(1, 2), maps.transpose(1, 2)).sum(0)  # (d, C)
        grad_sum = grad.sum((0, 1))  # (d,)
        grad_projection = outer @ neck_weight.T + grad_sum[:, None] * neck_bias[None, :]
        return grad_maps, projection.T @ outer, projection.T @ grad_sum, grad_projection


class _NormalizeRows(torch.autograd.Function):
    """`F.normalize(x, dim=-1)` with a closed-form backward, (g - y (g . y)) / |x| (g / eps where the norm is
    clamped): three elementwise passes instead of autograd's eight over every pixel's features."""

    @staticmethod
    def forward(ctx, rows, eps):
        norm = torch.linalg.vector_norm(rows, dim=-1, keepdim=True)
        clamped = norm.clamp_min(eps)
        normalized = rows / clamped
        ctx.save_for_backward(normalized, clamped, norm > eps)
        return normalized

    @staticmethod
    def backward(ctx, grad):
        normalized, clamped, unclamped = ctx.saved_tensors
        along = (grad * normalized).sum(-1, keepdim=True) * unclamped
        return (grad - normalized * along) / clamped, None


class LarvSegMaskNorm(nn.Module):
    """Mask norm with its two learned scalars; they get their own learning rate in training (see
    `LarvSegTrainer.create_optimizer`), so they live in one module the trainer can find by name."""

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(()))
        self.beta = nn.Parameter(torch.zeros(()))

    def forward(
        self,
        scores: torch.Tensor,
        class_mask: torch.Tensor | None = None,
        moments: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        return mask_norm(scores, self.gamma, self.beta, class_mask, self.eps, moments)


class LarvSegHead(nn.Module):
    """Neck (1x1 conv when `head_hidden_size` differs from the backbone's width), pixel projection P, class
    embeddings E with class projection Q, and mask norm."""

    def __init__(self, config: LarvSegConfig, in_channels: int):
        super().__init__()
        dim = config.head_hidden_size or in_channels
        self.config = config  # read at call time: text initialisation may freeze E after construction
        self.hidden_size = dim
        self.neck = nn.Conv2d(in_channels, dim, 1) if dim != in_channels else nn.Identity()
        self.pixel_projection = nn.Linear(dim, dim, bias=False)  # P
        self.class_projection = nn.Linear(dim, dim, bias=False)  # Q
        self.class_embeddings = nn.Parameter(torch.empty(config.num_labels, dim))  # E
        self.class_embeddings.requires_grad_(not config.freeze_class_embeddings)
        self.mask_norm = LarvSegMaskNorm(config.mask_norm_eps)

    def pixel_features(self, feature_map: torch.Tensor) -> torch.Tensor:
        """L2-normalised projected pixel features z (B, d, h, w) of a backbone feature map.

        Computed pixel-major, (B, h * w, d) in memory and returned as a (B, d, h, w) view of it: the
        normalisation and the classifier then run on contiguous rows, with no layout copy in between."""
        batch, _, height, width = feature_map.shape
        maps = feature_map.flatten(2)  # (B, C, X): a view of NCHW and of channels-last (ViT) maps alike
        if isinstance(self.neck, nn.Conv2d):
            weight, bias = self.neck.weight.flatten(1), self.neck.bias
            projected = _NeckThenProjection.apply(maps, weight, bias, self.pixel_projection.weight)
        else:
            projected = self.pixel_projection(maps.transpose(1, 2))
        projected = _NormalizeRows.apply(projected.reshape(batch * height * width, -1), 1e-12)
        return projected.view(batch, height * width, -1).transpose(1, 2).view(batch, -1, height, width)

    def class_vectors(self, class_ids: torch.Tensor) -> torch.Tensor:
        """L2-normalised projected class embeddings c (K, d).

        Without gradients, the whole vocabulary's vectors are computed once and reused until E or Q
        change (their in-place version counters move), so a 21K-class model does not re-project
        21K x d x d at every image."""
        if not torch.is_grad_enabled():
            vectors = self._cached_class_vectors()
            whole = class_ids.numel() == vectors.shape[0] and torch.equal(
                class_ids, torch.arange(vectors.shape[0], device=class_ids.device)
            )
            return vectors if whole else vectors[class_ids]
        embeddings = self.class_embeddings[class_ids]
        if self.config.freeze_class_embeddings:
            embeddings = embeddings.detach()
        return F.normalize(self.class_projection(embeddings), dim=-1)

    def _cached_class_vectors(self) -> torch.Tensor:
        embeddings, projection = self.class_embeddings, self.class_projection.weight
        key = (
            embeddings._version,
            projection._version,
            embeddings.data_ptr(),
            projection.data_ptr(),
            embeddings.device,
        )
        cache = getattr(self, "_class_vector_cache", None)
        if cache is None or cache[0] != key:
            with torch.no_grad():
                vectors = F.normalize(self.class_projection(embeddings), dim=-1)
            self._class_vector_cache = (key, vectors)
        return self._class_vector_cache[1]

    def _cached_class_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (d,) and covariance (d, d) of the whole vocabulary's cached class vectors, kept with them."""
        vectors = self._cached_class_vectors()
        cache = getattr(self, "_class_moment_cache", None)
        if cache is None or cache[0] is not vectors:
            mean = vectors.mean(0)
            centered = vectors - mean
            self._class_moment_cache = (vectors, mean, centered.T @ centered / vectors.shape[0])
        return self._class_moment_cache[1:]

    def forward(
        self, feature_map: torch.Tensor, class_ids: torch.Tensor, class_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pixel features z (B, d, h, w), raw cosine scores s (B, K, h, w), mask-normed logits (B, K, h, w))
        for the vocabulary ids `class_ids`; `class_mask` (B, K) limits each sample's mask norm."""
        features = self.pixel_features(feature_map)
        return features, *self.classify(features, class_ids, class_mask)

    def classify(
        self,
        features: torch.Tensor,
        class_ids: torch.Tensor,
        class_mask: torch.Tensor | None = None,
        vectors: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw cosine scores s (B, K, h, w), mask-normed logits (B, K, h, w)) of pixel features z.
        `vectors`: `class_vectors(class_ids)` when the caller has them (several groups of one batch)."""
        vectors = self.class_vectors(class_ids) if vectors is None else vectors
        scores = torch.einsum("bdhw,kd->bkhw", features, vectors)
        moments = None
        cache = getattr(self, "_class_vector_cache", None)
        whole = not torch.is_grad_enabled() and cache is not None and vectors is cache[1]
        if (
            class_mask is None
            and whole
            and vectors.shape[0] > _MOMENTS_FROM_COVARIANCE_ABOVE * vectors.shape[1]
        ):
            # Over the whole vocabulary a pixel's score moments are c_mean . z and z^T Cov(c) z: a d x d
            # product per pixel instead of a strided pass over its K scores (21,841 of them at inference).
            mean, covariance = self._cached_class_moments()
            pixels = features.flatten(2).transpose(1, 2)  # (B, X, d)
            variance = ((pixels @ covariance) * pixels).sum(-1).clamp_min(0)
            moments = tuple(
                m.view(features.shape[0], 1, *features.shape[2:]) for m in (pixels @ mean, variance)
            )
        return scores, self.mask_norm(scores, class_mask, moments)


__all__ = ["LarvSegHead", "LarvSegMaskNorm", "mask_norm"]
