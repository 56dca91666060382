"""Tests of pvdetect.model.losses: values by hand, masking, gradients, autocast, config."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from pvdetect.errors import ConfigError
from pvdetect.model.losses import (
    LOSSES,
    BCEFocalJaccardLoss,
    build_loss,
)

NAMES = sorted(LOSSES)


def _sig(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def _bce(x: float, t: float) -> float:
    p = _sig(x)
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


# A 2x2 case: pixel (1, 1) is ignored (target 255) and has a wild logit.
LOGITS = [[1.0, -2.0], [0.5, 40.0]]
TARGET = [[1, 0], [1, 255]]
PIXELS = [(1.0, 1.0), (-2.0, 0.0), (0.5, 1.0)]  # the counted (logit, target) pairs


def _tiny() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    logits = torch.tensor([LOGITS], dtype=torch.float32).unsqueeze(1)  # [1,1,2,2]
    target = torch.tensor([TARGET], dtype=torch.uint8)
    valid = torch.ones(1, 2, 2, dtype=torch.bool)
    return logits, target, valid


def _hand_bce(pos_w: float = 2.0, neg_w: float = 1.0) -> float:
    num = sum((pos_w if t else neg_w) * _bce(x, t) for x, t in PIXELS)
    den = sum(pos_w if t else neg_w for _, t in PIXELS)
    return num / den


def _hand_focal(alpha: float = 0.8, gamma: float = 1.5) -> float:
    total = 0.0
    for x, t in PIXELS:
        p = _sig(x)
        pt = p if t else 1 - p
        a = alpha if t else 1 - alpha
        total += -a * (1 - pt) ** gamma * math.log(pt)
    return total / len(PIXELS)


def _hand_jaccard_class(probs: list[float], labels: list[float], eps: float = 1.0) -> float:
    inter = sum(p * t for p, t in zip(probs, labels, strict=True))
    union = sum(probs) + sum(labels) - inter
    return 1 - (inter + eps) / (union + eps)


def _hand_jaccard(pv: float = 0.85, bg: float = 0.15) -> float:
    probs = [_sig(x) for x, _ in PIXELS]
    labels = [t for _, t in PIXELS]
    j_pv = _hand_jaccard_class(probs, labels)
    j_bg = _hand_jaccard_class([1 - p for p in probs], [1 - t for t in labels])
    return pv * j_pv + bg * j_bg


def _hand_dice(eps: float = 1.0) -> float:
    probs = [_sig(x) for x, _ in PIXELS]
    labels = [t for _, t in PIXELS]
    inter = sum(p * t for p, t in zip(probs, labels, strict=True))
    return 1 - (2 * inter + eps) / (sum(probs) + sum(labels) + eps)


def _hand_lovasz() -> float:
    """Lovasz extension of the Jaccard loss evaluated by set differences."""
    errors = [1 - x * (2 * t - 1) for x, t in PIXELS]
    gt = {i for i, (_, t) in enumerate(PIXELS) if t}

    def delta(wrong: set[int]) -> float:  # Jaccard loss when exactly `wrong` pixels are wrong
        union = gt | wrong
        return 1 - len(gt - wrong) / len(union) if union else 0.0

    order = sorted(range(len(errors)), key=lambda i: -errors[i])
    total, prev, wrong = 0.0, 0.0, set()
    for i in order:
        wrong.add(i)
        d = delta(wrong)
        total += max(errors[i], 0.0) * (d - prev)
        prev = d
    return total


HAND = {
    "bce": _hand_bce(),
    "focal": _hand_focal(),
    "jaccard": _hand_jaccard(),
    "dice": _hand_dice(),
    "lovasz": _hand_lovasz(),
    "bce_focal_jaccard": 0.3 * _hand_bce() + 0.3 * _hand_focal() + 0.4 * _hand_jaccard(),
}


@pytest.mark.parametrize("name", NAMES)
def test_value_matches_hand_computation(name: str) -> None:
    logits, target, valid = _tiny()
    value = build_loss(name)(logits, target, valid)
    assert value.dtype == torch.float32 and value.dim() == 0
    assert value.item() == pytest.approx(HAND[name], rel=1e-5, abs=1e-6)
    # [B,H,W] logits and valid=None (=> target != 255) give the same value.
    same = build_loss(name)(logits[:, 0], target, None)
    assert same.item() == pytest.approx(value.item(), rel=1e-6)


def test_custom_parameters_change_value_as_documented() -> None:
    logits, target, valid = _tiny()
    assert build_loss("bce", pos_weight=5.0, neg_weight=0.5)(
        logits, target, valid
    ).item() == pytest.approx(_hand_bce(5.0, 0.5), rel=1e-5)
    assert build_loss("focal", alpha=0.25, gamma=2.0)(
        logits, target, valid
    ).item() == pytest.approx(_hand_focal(0.25, 2.0), rel=1e-5)
    assert build_loss("jaccard", pv_weight=1.0, background_weight=0.0)(
        logits, target, valid
    ).item() == pytest.approx(_hand_jaccard(1.0, 0.0), rel=1e-5)
    combo = build_loss("bce_focal_jaccard", bce_weight=1.0, focal_weight=0.0, jaccard_weight=2.0)
    expected = _hand_bce() + 2.0 * _hand_jaccard()
    assert combo(logits, target, valid).item() == pytest.approx(expected, rel=1e-5)


def _random_case(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 1, 8, 8, generator=g) * 2
    target = (torch.rand(3, 8, 8, generator=g) < 0.3).to(torch.uint8)
    valid = torch.rand(3, 8, 8, generator=g) < 0.8
    valid[2] = False  # one image entirely nodata
    valid[0, 0, 0] = True
    target[0, 0, 0] = 1  # at least one positive
    return logits, target, valid


@pytest.mark.parametrize("name", NAMES)
def test_nodata_pixels_do_not_change_loss_or_get_gradient(name: str) -> None:
    logits, target, valid = _random_case()
    loss = build_loss(name)
    x1 = logits.clone().requires_grad_(True)
    v1 = loss(x1, target, valid)
    v1.backward()
    # Scramble everything at invalid pixels, including NaN/inf logits and 255 targets.
    invalid = ~valid
    wild = torch.where(invalid.unsqueeze(1), torch.full_like(logits, 1e4), logits)
    wild[0, 0][invalid[0]] = float("nan")
    wild[1, 0][invalid[1]] = float("-inf")
    t2 = target.clone()
    t2[invalid] = torch.tensor([1, 0, 255], dtype=torch.uint8).repeat(int(invalid.sum()))[
        : int(invalid.sum())
    ]
    x2 = wild.clone().requires_grad_(True)
    v2 = loss(x2, t2, valid)
    v2.backward()
    assert torch.isfinite(v2)
    assert v2.item() == pytest.approx(v1.item(), rel=1e-6, abs=1e-7)
    assert torch.all(x1.grad[:, 0][invalid] == 0)
    assert torch.all(x2.grad[:, 0][invalid] == 0)
    assert torch.allclose(x1.grad, x2.grad, atol=1e-7)


@pytest.mark.parametrize("name", NAMES)
def test_named_loss_has_nonzero_finite_gradient(name: str) -> None:
    logits, target, valid = _random_case(1)
    x = logits.clone().requires_grad_(True)
    build_loss(name)(x, target, valid).backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad[:, 0][valid].abs().sum() > 0


@pytest.mark.parametrize("term", ["bce", "focal", "jaccard"])
def test_every_term_of_default_loss_has_gradient(term: str) -> None:
    logits, target, valid = _random_case(2)
    loss = build_loss()
    assert isinstance(loss, BCEFocalJaccardLoss)
    x = logits.clone().requires_grad_(True)
    terms = loss.terms(x, target, valid)
    assert set(terms) == {"bce", "focal", "jaccard"}
    terms[term].backward()
    assert x.grad[:, 0][valid].abs().sum() > 0
    assert torch.all(x.grad[:, 0][~valid] == 0)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_finite_under_autocast_with_extreme_logits(name: str, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(3)
    target = (torch.rand(2, 16, 16, generator=g) < 0.5).to(torch.uint8)
    valid = torch.rand(2, 16, 16, generator=g) < 0.9
    signs = torch.where(torch.rand(2, 1, 16, 16, generator=g) < 0.5, -1.0, 1.0)
    # Half the pixels confidently right, half confidently wrong, at +-50.
    base = (50.0 * signs).to(dtype).requires_grad_(True)
    weight = torch.ones(1, dtype=dtype, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = build_loss(name)(base * weight, target, valid)
    value.backward()
    assert value.dtype == torch.float32
    assert torch.isfinite(value)
    assert torch.isfinite(base.grad.float()).all()
    assert torch.isfinite(weight.grad.float()).all()
    # all-correct extreme logits: loss small and finite
    correct = torch.where(target.bool(), 50.0, -50.0).unsqueeze(1).to(dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        good = build_loss(name)(correct, target, valid)
    assert torch.isfinite(good) and good.item() <= value.item()


@pytest.mark.parametrize("name", NAMES)
def test_loss_decreases_as_logits_move_toward_target(name: str) -> None:
    logits, target, valid = _random_case(4)
    direction = (2.0 * target.float() - 1.0).unsqueeze(1)
    loss = build_loss(name)
    values = [loss(logits + s * direction, target, valid).item() for s in (0.0, 1.0, 3.0, 8.0)]
    assert all(a > b for a, b in itertools.pairwise(values)), values


@pytest.mark.parametrize("name", NAMES)
def test_no_counted_pixels_gives_zero_without_nan(name: str) -> None:
    logits, target, _ = _random_case(5)
    x = logits.clone().requires_grad_(True)
    value = build_loss(name)(x, target, torch.zeros(3, 8, 8, dtype=torch.bool))
    value.backward()
    assert value.item() == 0.0
    assert torch.all(x.grad == 0)


def test_float_targets_and_uint8_targets_agree() -> None:
    logits, target, valid = _random_case(6)
    loss = build_loss()
    a = loss(logits, target, valid)
    b = loss(logits, target.float(), valid)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_lovasz_per_image_and_batch_differ_but_agree_for_one_image() -> None:
    logits, target, valid = _random_case(7)
    per_image = build_loss("lovasz", per_image=True)
    batch = build_loss("lovasz", per_image=False)
    one = (logits[:1], target[:1], valid[:1])
    assert per_image(*one).item() == pytest.approx(batch(*one).item(), rel=1e-6)
    # per image averages over the two images that have counted pixels (image 2 has none)
    v0 = per_image(logits[:1], target[:1], valid[:1]).item()
    v1 = per_image(logits[1:2], target[1:2], valid[1:2]).item()
    assert per_image(logits, target, valid).item() == pytest.approx((v0 + v1) / 2, rel=1e-5)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as info:
        build_loss("hinge")
    message = str(info.value)
    for name in NAMES:
        assert name in message


def test_bad_parameters_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="gamma"):
        build_loss("dice", gamma=2.0)
    with pytest.raises(ConfigError, match="alpha"):
        build_loss("focal", alpha=1.5)
    with pytest.raises(ConfigError, match="pos_weight"):
        build_loss("bce", pos_weight="lots")
    with pytest.raises(ConfigError, match="eps"):
        build_loss("jaccard", eps=0.0)
    with pytest.raises(ConfigError, match="per_image"):
        build_loss("lovasz", per_image="yes")


def test_shape_mismatch_raises_value_error() -> None:
    with pytest.raises(ValueError, match="target shape"):
        build_loss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 5), None)
    with pytest.raises(ValueError, match="1 channel"):
        build_loss()(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4), None)


def test_build_loss_takes_the_configured_parameters() -> None:
    """``loss.name`` and ``loss.params`` of the training configuration go to build_loss."""
    logits, target, valid = _tiny()
    assert build_loss()(logits, target, valid).item() == pytest.approx(
        HAND["bce_focal_jaccard"], rel=1e-5
    )
    assert build_loss("dice", eps=1.0)(logits, target, valid).item() == pytest.approx(
        _hand_dice(), rel=1e-5
    )
    bce = build_loss("bce", pos_weight=5.0, neg_weight=0.5)
    assert bce(logits, target, valid).item() == pytest.approx(_hand_bce(5.0, 0.5), rel=1e-5)
    with pytest.raises(ConfigError, match="gama"):
        build_loss("focal", gama=2)
    with pytest.raises(ConfigError, match="unknown loss"):
        build_loss("nope")
