"""Segmentation losses of the two papers, with masks for structures that were not contoured.

Shapes: ``logits`` ``[B, C, k, j, i]`` (raw network output, class 0 = background), ``target`` either an
integer label map ``[B, k, j, i]`` with values ``0..C-1`` or a one-hot / soft target ``[B, C, k, j, i]``.

* :func:`sigmoid_cross_entropy` -- the SV-net paper, Eq. 1-2: a per-channel sigmoid and binary cross-entropy on
  the one-hot target, summed over voxels (``reduction="sum"``, the paper's formula) or averaged over
  voxels and channels (``"mean"``, the same optimum with a learning rate that does not depend on the crop
  size; what TensorFlow's ``reduce_mean`` of ``sigmoid_cross_entropy_with_logits`` computes).
* :func:`dice_loss`, :func:`focal_loss`, :func:`hybrid_loss` -- the AnatomyNet paper, Eq. 3: Tversky-form Dice with
  alpha = beta = 0.5 (= Dice) per class, focal loss with gamma = 2 normalised by the number of voxels N,
  and Dice + lambda * focal with lambda = 0.5.

**Missing is not background** (AnatomyNet paper, section II.C; OpenKBP README): a case in which a structure was not
drawn has its voxels labelled 0 anyway. ``class_mask`` ``[B, C]`` (1 = annotated) removes the missing
structures' terms, and the background's unless every structure was annotated (Eq. 4-5); ``class_weights``
``[C]`` = ``w(c) = 1 / #annotations of c`` (:func:`annotation_weights`) balances the classes (Eq. 6-7).

With ``activation="sigmoid"`` every channel's probability depends only on its own logits, so a masked
class gets **exactly zero gradient**. With ``"softmax"`` (AnatomyNet) the classes share one normaliser,
so a missing class's logits still move through the annotated classes' terms; what the mask guarantees
there is that the loss does not depend on what the label map says inside a missing structure (drawn or
left 0 gives the same loss and gradient), which is what "not background" means.

The Dice terms are written ``sum_c m w (1 - T_c)``; with all masks and weights 1 this is Eq. 3's
``C - sum_c T_c``, and with masks it differs from Eq. 6 by a constant only (same gradients), so that a
fully masked case logs 0 rather than C.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union, cast

import torch
import torch.nn.functional as F

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "one_hot",
    "class_mask_from_annotated",
    "annotation_weights",
    "sigmoid_cross_entropy",
    "dice_loss",
    "focal_loss",
    "hybrid_loss",
    "marginal_loss",
    "build_loss",
    "SegmentationLoss",
]

ACTIVATIONS = ("softmax", "sigmoid")
LOSSES = ("sigmoid_ce", "dice", "focal", "hybrid", "marginal")


def one_hot(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``[B, k, j, i]`` integer labels -> ``[B, C, k, j, i]`` float one-hot (a float target passes through)."""
    if target.is_floating_point():
        if target.shape[1] != num_classes:
            raise ValueError(f"A one-hot target must have {num_classes} channels, got shape {tuple(target.shape)}.")
        return target
    if target.min() < 0 or target.max() >= num_classes:
        raise ValueError(
            f"Target labels must lie in 0..{num_classes - 1}, got {int(target.min())}..{int(target.max())}; "
            "map the label map to model classes first."
        )
    return F.one_hot(target.long(), num_classes).movedim(-1, 1).to(torch.float32)


def class_mask_from_annotated(annotated: torch.Tensor) -> torch.Tensor:
    """The AnatomyNet paper Eq. 4-5: ``[B, C-1]`` booleans (foreground structure annotated?) -> ``[B, C]`` mask whose
    background entry is 1 only when every structure of the case was annotated."""
    annotated = annotated.to(torch.float32)
    background = annotated.min(dim=1, keepdim=True).values
    return torch.cat([background, annotated], dim=1)


def annotation_weights(masks: torch.Tensor) -> torch.Tensor:
    """The AnatomyNet paper: ``w(c) = 1 / sum_i m_i(c)`` over the training cases' ``[cases, C]`` masks.

    A class annotated in no case gets weight 0 (it can contribute nothing anyway)."""
    counts = masks.to(torch.float64).sum(dim=0)
    weights = torch.where(counts > 0, 1.0 / counts.clamp(min=1.0), torch.zeros_like(counts))
    return weights.to(torch.float32)


def _class_factors(batch: int, channels: int, class_mask: Optional[torch.Tensor],
                   class_weights: Optional[torch.Tensor], device) -> torch.Tensor:
    """``m_i(c) * w(c)`` as a ``[B, C]`` tensor (ones when neither is given)."""
    factors = torch.ones(batch, channels, device=device, dtype=torch.float32)
    if class_mask is not None:
        class_mask = torch.as_tensor(class_mask, dtype=torch.float32, device=device)
        if class_mask.shape != (batch, channels):
            raise ValueError(f"class_mask must have shape {(batch, channels)}, got {tuple(class_mask.shape)}.")
        factors = factors * class_mask
    if class_weights is not None:
        class_weights = torch.as_tensor(class_weights, dtype=torch.float32, device=device)
        if class_weights.shape != (channels,):
            raise ValueError(f"class_weights must have shape {(channels,)}, got {tuple(class_weights.shape)}.")
        factors = factors * class_weights[None]
    return factors


def _probabilities(logits: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "softmax":
        return torch.softmax(logits, dim=1)
    if activation == "sigmoid":
        return torch.sigmoid(logits)
    raise ValueError(f"Unknown activation {activation!r}; use one of {ACTIVATIONS}.")


def sigmoid_cross_entropy(logits: torch.Tensor, target: torch.Tensor, class_mask: Optional[torch.Tensor] = None,
                          class_weights: Optional[torch.Tensor] = None, reduction: str = "mean") -> torch.Tensor:
    """The SV-net paper Eq. 2: ``sum -[y ln p + (1 - y) ln(1 - p)]`` with ``p = sigmoid(logits)`` per channel.

    ``reduction="sum"`` is the paper's sum over voxels (and channels and batch); ``"mean"`` divides it by
    ``B * C * N`` (N voxels per case). Masks and weights multiply each case's channel terms."""
    logits = logits.float()
    y = one_hot(target, logits.shape[1])
    per_voxel = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    per_class = per_voxel.flatten(2).sum(dim=2)  # [B, C]
    factors = _class_factors(logits.shape[0], logits.shape[1], class_mask, class_weights, logits.device)
    total = (per_class * factors).sum()
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / float(per_voxel.numel())
    raise ValueError(f"Unknown reduction {reduction!r}; use 'mean' or 'sum'.")


def dice_loss(logits: torch.Tensor, target: torch.Tensor, class_mask: Optional[torch.Tensor] = None,
              class_weights: Optional[torch.Tensor] = None, activation: str = "softmax", alpha: float = 0.5,
              beta: float = 0.5, smooth: float = 1e-5) -> torch.Tensor:
    """The AnatomyNet paper's Dice term: ``sum_c m w (1 - TP / (TP + alpha FN + beta FP))`` per case, averaged over the
    batch; TP, FN, FP are sums of probabilities (soft counts). ``smooth`` is added to numerator and
    denominator so a class absent from both target and prediction counts as perfect, not as 0/0."""
    logits = logits.float()
    g = one_hot(target, logits.shape[1])
    p = _probabilities(logits, activation)
    tp = (p * g).flatten(2).sum(dim=2)
    fn = ((1.0 - p) * g).flatten(2).sum(dim=2)
    fp = (p * (1.0 - g)).flatten(2).sum(dim=2)
    tversky = (tp + smooth) / (tp + alpha * fn + beta * fp + smooth)
    factors = _class_factors(logits.shape[0], logits.shape[1], class_mask, class_weights, logits.device)
    return ((1.0 - tversky) * factors).sum(dim=1).mean()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, class_mask: Optional[torch.Tensor] = None,
               class_weights: Optional[torch.Tensor] = None, activation: str = "softmax",
               gamma: float = 2.0) -> torch.Tensor:
    """The AnatomyNet paper's focal term: ``-(1/N) sum_c m w sum_n g (1 - p)^gamma log p`` per case, batch-averaged.

    With ``activation="sigmoid"`` each channel is a binary problem and its negatives count too:
    ``-(1/N) sum_c m w sum_n [g (1-p)^gamma log p + (1-g) p^gamma log(1-p)]``."""
    logits = logits.float()
    g = one_hot(target, logits.shape[1])
    if activation == "softmax":
        log_p = torch.log_softmax(logits, dim=1)
        terms = g * (1.0 - log_p.exp()).pow(gamma) * log_p
    elif activation == "sigmoid":
        log_p = F.logsigmoid(logits)
        log_not_p = F.logsigmoid(-logits)
        p = log_p.exp()
        terms = g * (1.0 - p).pow(gamma) * log_p + (1.0 - g) * p.pow(gamma) * log_not_p
    else:
        raise ValueError(f"Unknown activation {activation!r}; use one of {ACTIVATIONS}.")
    voxels = float(terms[0, 0].numel())
    per_class = -terms.flatten(2).sum(dim=2) / voxels  # [B, C]
    factors = _class_factors(logits.shape[0], logits.shape[1], class_mask, class_weights, logits.device)
    return (per_class * factors).sum(dim=1).mean()


def hybrid_loss(logits: torch.Tensor, target: torch.Tensor, class_mask: Optional[torch.Tensor] = None,
                class_weights: Optional[torch.Tensor] = None, activation: str = "softmax", lam: float = 0.5,
                gamma: float = 2.0, alpha: float = 0.5, beta: float = 0.5, smooth: float = 1e-5) -> torch.Tensor:
    """The AnatomyNet paper Eq. 3 / 6-7: Dice + lambda * focal (lambda 0.5 was the paper's best)."""
    return (dice_loss(logits, target, class_mask, class_weights, activation, alpha, beta, smooth)
            + lam * focal_loss(logits, target, class_mask, class_weights, activation, gamma))


def marginal_loss(logits: torch.Tensor, target: torch.Tensor, class_mask: Optional[torch.Tensor] = None,
                  dice_weight: float = 1.0, smooth: float = 1e-5) -> torch.Tensor:
    """Soft-max cross-entropy + soft Dice where, per case, the classes that were not annotated are merged
    into background (the *marginal* loss of Shi et al., "Marginal loss and exclusion loss for partially
    supervised multi-organ segmentation", MedIA 2021).

    A voxel labelled 0 in a case without, say, an oesophagus contour means "background *or* oesophagus":
    its cross-entropy term is ``-log(p_0 + p_oesophagus)``, so predicting the missing organ there costs
    nothing, and the annotated organs are learned in full (the masked Dice of the AnatomyNet paper drops a missing
    class's terms but, under soft-max, still pushes it down through the background's). Labels of a
    missing class (drawn but not reviewed) count as that merged background. Dice is averaged over the
    annotated foreground classes of each case that are present in its window or predicted there."""
    logits = logits.float()
    batch, channels = logits.shape[:2]
    if class_mask is None:
        class_mask = torch.ones(batch, channels, device=logits.device)
    annotated = torch.as_tensor(class_mask, dtype=torch.bool, device=logits.device).clone()
    annotated[:, 0] = False
    merged = ~annotated  # background + missing classes, per case
    log_p = torch.log_softmax(logits, dim=1)
    shape = (batch, channels) + (1,) * (logits.dim() - 2)
    log_merged = torch.logsumexp(log_p.masked_fill(~merged.view(shape), float("-inf")), dim=1)
    target = target.long()
    target_annotated = torch.gather(annotated.long(), 1, target.flatten(1)).view_as(target).bool()
    log_target = torch.gather(log_p, 1, target[:, None]).squeeze(1)
    ce = -torch.where(target_annotated, log_target, log_merged).mean()
    if dice_weight == 0:
        return ce
    p = log_p.exp()
    g = F.one_hot(torch.where(target_annotated, target, torch.zeros_like(target)), channels).movedim(-1, 1).float()
    tp = (p * g).flatten(2).sum(dim=2)
    pred = p.flatten(2).sum(dim=2)
    ref = g.flatten(2).sum(dim=2)
    dice = (2.0 * tp + smooth) / (pred + ref + smooth)
    counts = annotated & ((ref > 0) | (pred > 1.0))
    dice_term = ((1.0 - dice) * counts).sum() / counts.sum().clamp(min=1)
    return ce + dice_weight * dice_term


class SegmentationLoss(torch.nn.Module):
    """A loss chosen by name with its options, callable as ``loss(logits, target, class_mask)``.

    ``class_weights`` (the AnatomyNet paper's w(c)) are fixed when the loss is built, from the training set."""

    def __init__(self, kind: str = "hybrid", activation: str = "softmax", lam: float = 0.5, gamma: float = 2.0,
                 alpha: float = 0.5, beta: float = 0.5, smooth: float = 1e-5, masked: bool = True,
                 class_weights: Union[Sequence[float], torch.Tensor, None] = None, reduction: str = "mean") -> None:
        super().__init__()
        if kind not in LOSSES:
            raise ValueError(f"Unknown loss {kind!r}; use one of {', '.join(LOSSES)}.")
        if activation not in ACTIVATIONS:
            raise ValueError(f"Unknown activation {activation!r}; use one of {ACTIVATIONS}.")
        if kind == "sigmoid_ce" and activation != "sigmoid":
            raise ValueError("The sigmoid cross-entropy loss (SV-net paper) needs activation 'sigmoid'.")
        if kind == "marginal" and activation != "softmax":
            raise ValueError("The marginal loss merges soft-max probabilities; it needs activation 'softmax'.")
        self.kind, self.activation, self.masked, self.reduction = kind, activation, masked, reduction
        self.lam, self.gamma, self.alpha, self.beta, self.smooth = lam, gamma, alpha, beta, smooth
        weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                class_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        mask = class_mask if self.masked else None
        w = cast(Optional[torch.Tensor], self.class_weights)  # a registered buffer (or None)
        if self.kind == "sigmoid_ce":
            return sigmoid_cross_entropy(logits, target, mask, w, self.reduction)
        if self.kind == "dice":
            return dice_loss(logits, target, mask, w, self.activation, self.alpha, self.beta, self.smooth)
        if self.kind == "focal":
            return focal_loss(logits, target, mask, w, self.activation, self.gamma)
        if self.kind == "marginal":
            return marginal_loss(logits, target, mask, self.lam, self.smooth)
        return hybrid_loss(logits, target, mask, w, self.activation, self.lam, self.gamma, self.alpha, self.beta,
                           self.smooth)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, activation={self.activation}, masked={self.masked}"


def build_loss(spec: dict, class_weights: Union[Sequence[float], torch.Tensor, None] = None) -> SegmentationLoss:
    """A :class:`SegmentationLoss` from a recipe's ``loss`` section (see ``training/configs``)."""
    known = {"type", "activation", "lambda", "gamma", "alpha", "beta", "smooth", "masked", "weighted", "reduction"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ValueError(f"Unknown loss option(s) {unknown}; known: {sorted(known)}.")
    return SegmentationLoss(
        kind=spec.get("type", "hybrid"), activation=spec.get("activation", "softmax"),
        lam=float(spec.get("lambda", 0.5)), gamma=float(spec.get("gamma", 2.0)), alpha=float(spec.get("alpha", 0.5)),
        beta=float(spec.get("beta", 0.5)), smooth=float(spec.get("smooth", 1e-5)),
        masked=bool(spec.get("masked", True)),
        class_weights=class_weights if spec.get("weighted", False) else None,
        reduction=spec.get("reduction", "mean"))
