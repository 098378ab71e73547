"""The hand-written kernels on the training path against the PyTorch operations they stand for: bilinear and
nearest resizing (resize_larvseg.py), pooling through the resize's transpose, and the head's fused neck +
projection and row normalisation with closed-form backwards."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from larvseg_hf.head_larvseg import LarvSegHead, _NeckThenProjection, _NormalizeRows
from larvseg_hf.losses_larvseg import masked_mean_pool
from larvseg_hf.resize_larvseg import bilinear_resize, bilinear_resize_transposed, nearest_resize

SIZES = [((16, 16), (32, 32)), ((7, 13), (30, 17)), ((5, 5), (3, 4)), ((1, 3), (4, 4)), ((8, 8), (8, 8))]


@pytest.mark.parametrize(("small", "large"), SIZES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("layout", ["nchw", "channels-last"])  # the classifier writes channels-last logits
def test_bilinear_resize_is_interpolate(small, large, dtype, layout):
    values = torch.randn(2, 3, *small, generator=torch.Generator().manual_seed(0)).to(dtype)
    if layout == "channels-last":
        values = values.contiguous(memory_format=torch.channels_last)
    expected = F.interpolate(values, large, mode="bilinear", align_corners=False)
    resized = bilinear_resize(values, large)
    assert resized.dtype == dtype and resized.shape == expected.shape
    if layout == "channels-last" and small != large:  # kept channels-last, no copy back
        assert resized.permute(0, 2, 3, 1).is_contiguous()
    tolerance = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-2}[dtype]
    torch.testing.assert_close(resized.double(), expected.double(), rtol=0, atol=tolerance)


@pytest.mark.parametrize(("small", "large"), SIZES)
def test_transposed_resize_is_the_adjoint(small, large):
    """<resize(x), y> == <x, resize^T(y)> for every x, y: what lets pooling run at the logits' resolution."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, *small, dtype=torch.float64, generator=generator)
    y = torch.randn(3, *large, dtype=torch.float64, generator=generator)
    down = bilinear_resize_transposed(y, small)
    assert down.shape == x.shape
    torch.testing.assert_close((bilinear_resize(x, large) * y).sum(), (x * down).sum())
    # And it is autograd's own adjoint of F.interpolate.
    x.requires_grad_(True)
    F.interpolate(x[None], large, mode="bilinear", align_corners=False)[0].backward(y)
    torch.testing.assert_close(x.grad, down)


def test_pooling_through_the_transpose_equals_pooling_the_upsampled_logits():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 5, 6, 7, dtype=torch.float64, generator=generator)
    real = torch.rand(3, 24, 28, generator=generator) > 0.3
    upsampled = F.interpolate(logits, (24, 28), mode="bilinear", align_corners=False)
    torch.testing.assert_close(masked_mean_pool(logits, real), masked_mean_pool(upsampled, real))
    # Every pixel real: the mean of the upsampled logits, which for a non-integer factor is not the plain
    # mean of the logits (bilinear resizing weighs border pixels unevenly).
    every = torch.ones(3, 20, 23, dtype=torch.bool)
    upsampled = F.interpolate(logits, (20, 23), mode="bilinear", align_corners=False)
    torch.testing.assert_close(masked_mean_pool(logits, every), upsampled.mean((2, 3)))
    assert not torch.allclose(masked_mean_pool(logits, every), logits.mean((2, 3)))


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ((128, 128), (32, 32)),
        ((96, 64), (24, 32)),
        ((100, 77), (25, 19)),
        ((10, 10), (30, 7)),
        ((9, 6), (3, 4)),
    ],
)
def test_nearest_resize_is_interpolate_for_ids_and_masks(source, target):
    ids = torch.randint(-100, 5000, (3, *source), generator=torch.Generator().manual_seed(3))
    expected = F.interpolate(ids[:, None].double(), target, mode="nearest")[:, 0].long()
    assert torch.equal(nearest_resize(ids, target), expected)
    mask = ids > 2000
    assert torch.equal(nearest_resize(mask, target), expected > 2000)


@pytest.mark.parametrize("layout", ["nchw", "channels-last"])
def test_fused_neck_and_projection_gradients(layout):
    """(B, C, X) maps in either memory layout (ResNet's NCHW, a ViT's token-major view) -> (B, X, d)."""
    generator = torch.Generator().manual_seed(4)
    maps, neck, bias, projection = (
        torch.randn(*shape, dtype=torch.float64, generator=generator)
        for shape in ((3, 7, 10), (5, 7), (5,), (5, 5))
    )
    if layout == "channels-last":
        maps = maps.transpose(1, 2).contiguous().transpose(1, 2)
    inputs = tuple(t.requires_grad_(True) for t in (maps, neck, bias, projection))
    assert torch.autograd.gradcheck(_NeckThenProjection.apply, inputs)
    torch.testing.assert_close(
        _NeckThenProjection.apply(*inputs),
        F.linear(F.linear(maps.transpose(1, 2), neck, bias), projection),
    )


def test_row_normalisation_matches_f_normalize_including_zero_rows():
    rows = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    rows[0] = 0.0
    rows[1] = 1e-14  # below eps: the norm is clamped, its gradient is cut as in F.normalize
    rows.requires_grad_(True)
    grad = torch.randn(6, 4, dtype=torch.float64)
    ours = _NormalizeRows.apply(rows, 1e-12)
    (ours_grad,) = torch.autograd.grad(ours, rows, grad)
    theirs = F.normalize(rows, dim=-1)
    (theirs_grad,) = torch.autograd.grad(theirs, rows, grad)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(ours_grad, theirs_grad)
    assert torch.autograd.gradcheck(
        lambda x: _NormalizeRows.apply(x, 1e-12), (rows[2:].detach().requires_grad_(),)
    )


@pytest.mark.parametrize("channels_last", [False, True])  # ResNet maps, ViT token maps
@pytest.mark.parametrize("in_channels", [24, 16])  # with a neck (24 -> 16) and without (16 = hidden size)
def test_pixel_features_equal_the_unfused_head(in_channels, channels_last):
    """The fused head gives the features and parameter gradients of neck -> P -> F.normalize written plainly."""
    from larvseg_hf import LarvSegConfig

    torch.manual_seed(6)
    config = LarvSegConfig(id2label={i: str(i) for i in range(4)}, head_hidden_size=16)
    head = LarvSegHead(config, in_channels).double()
    feature_map = torch.randn(2, in_channels, 3, 5, dtype=torch.float64)
    if channels_last:
        feature_map = feature_map.contiguous(memory_format=torch.channels_last)
    feature_map.requires_grad_(True)
    grad = torch.randn(2, 16, 3, 5, dtype=torch.float64)

    fused = head.pixel_features(feature_map)
    assert fused.shape == (2, 16, 3, 5)
    fused_grads = torch.autograd.grad(fused, [feature_map, *head.parameters()], grad, allow_unused=True)
    plain = head.neck(feature_map)
    plain = F.normalize(head.pixel_projection(plain.permute(0, 2, 3, 1)).permute(0, 3, 1, 2), dim=1)
    plain_grads = torch.autograd.grad(plain, [feature_map, *head.parameters()], grad, allow_unused=True)
    torch.testing.assert_close(fused, plain)
    for ours, theirs in zip(fused_grads, plain_grads, strict=True):
        assert (ours is None) == (theirs is None)
        if ours is not None:
            torch.testing.assert_close(ours, theirs)


def test_inference_mask_norm_moments_from_the_class_covariance_equal_the_scores_moments(monkeypatch):
    """Over a whole large vocabulary, inference takes each pixel's mask-norm mean and variance from the class
    vectors' mean and covariance; the logits are those of the per-pixel pass over the scores."""
    from larvseg_hf import LarvSegConfig, head_larvseg

    torch.manual_seed(7)
    config = LarvSegConfig(id2label={i: str(i) for i in range(300)}, head_hidden_size=16)  # K > 4 d
    head = LarvSegHead(config, 16).eval()
    with torch.no_grad():
        head.class_embeddings.normal_()
        head.class_embeddings[:150] += 3.0  # a mean far from 0: the moments must not cancel
        features = head.pixel_features(torch.randn(2, 16, 5, 6))
        every = torch.arange(300)
        calls = []
        original = head_larvseg.mask_norm
        monkeypatch.setattr(head_larvseg, "mask_norm", lambda *a: calls.append(a[-1]) or original(*a))
        scores, logits = head.classify(features, every)
        assert calls[-1] is not None  # the covariance path ran
        monkeypatch.setattr(head_larvseg, "_MOMENTS_FROM_COVARIANCE_ABOVE", 10**9)
        _, plain = head.classify(features, every)
        assert calls[-1] is None
        torch.testing.assert_close(logits, plain, rtol=0, atol=1e-5)
        torch.testing.assert_close(
            logits, original(scores, head.mask_norm.gamma, head.mask_norm.beta), rtol=0, atol=1e-5
        )
        # A subset of the classes is standardised over that subset, from its scores.
        _, subset = head.classify(features, every[:120])
        torch.testing.assert_close(
            subset, original(scores[:, :120], head.mask_norm.gamma, head.mask_norm.beta)
        )


@pytest.mark.parametrize("reduce", [True, False])
def test_supervised_loss_on_channels_last_logits_equals_nchw(reduce):
    """Channels-last logits take the (pixels, K) cross-entropy: the same losses and gradients."""
    from larvseg_hf.losses_larvseg import ItemLosses, supervised_loss

    generator = torch.Generator().manual_seed(8)
    logits = torch.randn(3, 6, 5, 4, dtype=torch.float64, generator=generator)
    labels = torch.randint(0, 6, (3, 5, 4), generator=generator)
    labels[1, :2] = -100
    source = torch.tensor([0, 1, 1])
    results = []
    for layout in (torch.contiguous_format, torch.channels_last):
        x = logits.clone().contiguous(memory_format=layout).requires_grad_(True)
        loss = supervised_loss(x, labels, image_source=source, reduce=reduce)
        loss = loss if reduce else ItemLosses.reduce([(loss, torch.arange(3))], source)
        (grad,) = torch.autograd.grad(loss, x)
        results.append((loss, grad))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


@pytest.mark.parametrize("shape", [(3, 5), (0, 4), (2, 0), (4, 1, 6)])
def test_byte_reductions_equal_bool_any_and_all(shape):
    from larvseg_hf.reductions_larvseg import all_true, any_true

    generator = torch.Generator().manual_seed(9)
    for mask in (
        torch.rand(shape, generator=generator) > 0.7,
        torch.zeros(shape, dtype=torch.bool),
        torch.ones(shape, dtype=torch.bool),
    ):
        mask = mask.transpose(0, -1)  # strided too
        assert torch.equal(any_true(mask), mask.any()) and torch.equal(all_true(mask), mask.all())
        if mask.shape[0]:
            assert torch.equal(any_true(mask, 0), mask.any(0)) and torch.equal(all_true(mask, 0), mask.all(0))


def test_training_step_under_autocast_matches_the_unfused_head():
    """Mixed precision (Trainer's --bf16): the fused neck + projection computes in autocast's dtype and its
    backward multiplies tensors of one dtype; losses and gradients stay close to the plain layers'."""
    from larvseg_hf import LarvSegConfig

    torch.manual_seed(10)
    config = LarvSegConfig(id2label={i: str(i) for i in range(5)}, head_hidden_size=16)
    head = LarvSegHead(config, 24)
    feature_map = torch.randn(2, 24, 4, 4, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = head.pixel_features(feature_map)
        plain = F.normalize(head.pixel_projection(head.neck(feature_map).permute(0, 2, 3, 1)), dim=-1)
    assert fused.dtype == plain.dtype
    plain = plain.permute(0, 3, 1, 2)
    weights = torch.randn(fused.shape)
    inputs = [feature_map, *head.parameters()]
    fused_grads = torch.autograd.grad((fused.float() * weights).sum(), inputs, allow_unused=True)
    plain_grads = torch.autograd.grad((plain.float() * weights).sum(), inputs, allow_unused=True)
    torch.testing.assert_close(fused.float(), plain.float(), rtol=0, atol=2e-2)
    for ours, theirs in zip(fused_grads, plain_grads, strict=True):
        assert (ours is None) == (theirs is None)
        if ours is not None:
            assert ours.dtype == theirs.dtype
            torch.testing.assert_close(
                ours.float(), theirs.float(), rtol=0, atol=5e-2 * float(theirs.abs().max()) + 1e-3
            )
