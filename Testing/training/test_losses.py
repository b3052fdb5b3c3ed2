"""Losses against values worked out by hand, and the masked / weighted variants of the AnatomyNet paper."""

from __future__ import annotations

import math

import pytest
import torch

from training.losses import (
    SegmentationLoss,
    annotation_weights,
    build_loss,
    class_mask_from_annotated,
    dice_loss,
    focal_loss,
    hybrid_loss,
    sigmoid_cross_entropy,
)


def _logits(values):
    """[C, N] nested list -> [1, C, 1, 1, N] tensor (one case, N voxels in a row)."""
    return torch.tensor(values, dtype=torch.float64)[None, :, None, None, :].float()


def _labels(values):
    return torch.tensor(values, dtype=torch.int64)[None, None, None, :]


def test_sigmoid_cross_entropy_matches_seed000_eq2_by_hand():
    # One voxel, two channels, true class 1. p0 = sigmoid(0) = 1/2, p1 = sigmoid(ln 3) = 3/4.
    # Eq. 2: -[0 ln p0 + 1 ln(1 - p0)] - [1 ln p1 + 0 ln(1 - p1)] = ln 2 + ln(4/3) = ln(8/3).
    logits = _logits([[0.0], [math.log(3.0)]])
    target = _labels([1])
    assert sigmoid_cross_entropy(logits, target, reduction="sum").item() == pytest.approx(math.log(8 / 3), rel=1e-6)
    # "mean" divides by channels x voxels = 2.
    assert sigmoid_cross_entropy(logits, target).item() == pytest.approx(math.log(8 / 3) / 2, rel=1e-6)


def test_dice_loss_by_hand_softmax():
    # Two voxels, two classes. Voxel 0: logits (ln 3, 0) -> p = (3/4, 1/4), truth 0.
    # Voxel 1: logits (0, 0) -> p = (1/2, 1/2), truth 1.
    # class 0: TP = 3/4, FN = 1/4, FP = 1/2 -> T0 = (3/4) / (3/4 + 1/8 + 1/4) = 2/3.
    # class 1: TP = 1/2, FN = 1/2, FP = 1/4 -> T1 = (1/2) / (1/2 + 1/4 + 1/8) = 4/7.
    # Loss = C - T0 - T1 = 2 - 2/3 - 4/7.
    logits = _logits([[math.log(3.0), 0.0], [0.0, 0.0]])
    target = _labels([0, 1])
    expected = 2 - 2 / 3 - 4 / 7
    assert dice_loss(logits, target, smooth=0.0).item() == pytest.approx(expected, rel=1e-6)


def test_focal_loss_by_hand_softmax():
    # Same voxels: true-class probabilities 3/4 and 1/2; N = 2 voxels, gamma = 2.
    # -(1/N) sum (1 - p)^2 ln p = -(1/2) [(1/4)^2 ln(3/4) + (1/2)^2 ln(1/2)].
    logits = _logits([[math.log(3.0), 0.0], [0.0, 0.0]])
    target = _labels([0, 1])
    expected = -0.5 * ((0.25 ** 2) * math.log(0.75) + (0.5 ** 2) * math.log(0.5))
    assert focal_loss(logits, target, gamma=2.0).item() == pytest.approx(expected, rel=1e-6)
    # Hybrid (the AnatomyNet paper Eq. 3) with lambda 0.5.
    hybrid = hybrid_loss(logits, target, lam=0.5, smooth=0.0).item()
    assert hybrid == pytest.approx(2 - 2 / 3 - 4 / 7 + 0.5 * expected, rel=1e-6)


def test_focal_loss_sigmoid_counts_negatives():
    # One voxel, channel 0 negative with p = 1/2, channel 1 positive with p = 3/4 (logit ln 3).
    # -(1/1)[ (1/2)^2 ln(1 - 1/2) + (1 - 3/4)^2 ln(3/4) ].
    logits = _logits([[0.0], [math.log(3.0)]])
    expected = -((0.5 ** 2) * math.log(0.5) + (0.25 ** 2) * math.log(0.75))
    assert focal_loss(logits, _labels([1]), activation="sigmoid").item() == pytest.approx(expected, rel=1e-6)


def test_background_mask_follows_eq5():
    annotated = torch.tensor([[1, 1, 1], [1, 0, 1]])
    mask = class_mask_from_annotated(annotated)
    assert mask.tolist() == [[1, 1, 1, 1], [0, 1, 0, 1]]


@pytest.mark.parametrize("kind", ["sigmoid_ce", "dice", "focal", "hybrid"])
def test_masked_loss_gives_zero_gradient_to_a_missing_class(kind):
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3, 5, 5, requires_grad=True)
    target = torch.randint(0, 4, (2, 3, 5, 5))
    # Case 0 lacks class 2 (so background is masked too); case 1 is complete.
    mask = torch.tensor([[0, 1, 0, 1], [1, 1, 1, 1]], dtype=torch.float32)
    loss = SegmentationLoss(kind, activation="sigmoid")(logits, target, mask)
    loss.backward()
    grad = logits.grad
    assert torch.count_nonzero(grad[0, 2]) == 0 and torch.count_nonzero(grad[0, 0]) == 0
    assert torch.count_nonzero(grad[0, 1]) > 0 and torch.count_nonzero(grad[1, 2]) > 0


def test_masked_softmax_loss_ignores_what_a_missing_structure_is_labelled():
    # With a soft-max the classes share a normaliser; what masking must guarantee is that a structure that
    # was not contoured is not learnt as background: labelling its voxels 0 or 2 gives the same loss/grad.
    torch.manual_seed(1)
    base = torch.randn(1, 3, 4, 6, 6)
    drawn = torch.randint(0, 2, (1, 4, 6, 6))
    drawn[0, 1:3, 2:4, 2:4] = 2
    erased = drawn.clone()
    erased[erased == 2] = 0
    mask = torch.tensor([[0, 1, 0]], dtype=torch.float32)
    results = []
    for target in (drawn, erased):
        logits = base.clone().requires_grad_(True)
        loss = hybrid_loss(logits, target, class_mask=mask)
        loss.backward()
        results.append((loss.detach(), logits.grad))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])
    # Without the mask the two labellings differ (the structure would be learnt as background).
    assert hybrid_loss(base, drawn).item() != pytest.approx(hybrid_loss(base, erased).item())


def test_annotation_weights_are_inverse_counts():
    masks = torch.tensor([[1, 1, 0, 1], [1, 1, 1, 0], [0, 1, 0, 0]])
    assert annotation_weights(masks).tolist() == pytest.approx([1 / 2, 1 / 3, 1.0, 1.0])
    assert annotation_weights(torch.tensor([[1, 0]])).tolist() == [1.0, 0.0]


def test_weighted_masked_dice_matches_eq6():
    torch.manual_seed(2)
    logits = torch.randn(1, 3, 2, 4, 4)
    target = torch.randint(0, 3, (1, 2, 4, 4))
    mask = torch.tensor([[0.0, 1.0, 1.0]])
    weights = torch.tensor([0.5, 0.25, 0.2])
    p = torch.softmax(logits, 1)
    g = torch.nn.functional.one_hot(target, 3).movedim(-1, 1).float()
    expected = 0.0
    for c in range(3):
        tp = float((p[:, c] * g[:, c]).sum())
        fn = float(((1 - p[:, c]) * g[:, c]).sum())
        fp = float((p[:, c] * (1 - g[:, c])).sum())
        expected += float(mask[0, c] * weights[c]) * (1 - tp / (tp + 0.5 * fn + 0.5 * fp))
    got = dice_loss(logits, target, class_mask=mask, class_weights=weights, smooth=0.0).item()
    assert got == pytest.approx(expected, rel=1e-5)
    # The weighted focal term scales each class's term by m w as well (Eq. 7).
    lp = torch.log_softmax(logits, 1)
    per_class = [float(-(g[:, c] * (1 - lp[:, c].exp()) ** 2 * lp[:, c]).sum() / g[0, 0].numel()) for c in range(3)]
    expected_focal = sum(float(mask[0, c] * weights[c]) * per_class[c] for c in range(3))
    got_focal = focal_loss(logits, target, class_mask=mask, class_weights=weights).item()
    assert got_focal == pytest.approx(expected_focal, rel=1e-5)


def test_build_loss_checks_options():
    loss = build_loss({"type": "hybrid", "weighted": True}, class_weights=[1.0, 0.5])
    assert loss.class_weights.tolist() == [1.0, 0.5]
    assert build_loss({"type": "dice", "weighted": False}, class_weights=[1.0, 0.5]).class_weights is None
    with pytest.raises(ValueError, match="Unknown loss option"):
        build_loss({"type": "dice", "lamda": 0.5})
    with pytest.raises(ValueError, match="needs activation 'sigmoid'"):
        build_loss({"type": "sigmoid_ce", "activation": "softmax"})
    with pytest.raises(ValueError, match="0..2"):
        dice_loss(torch.zeros(1, 3, 1, 1, 2), torch.tensor([[[[0, 3]]]]))
