"""Network architectures of HeadSeg and a name-based factory for model packages.

Model packages store ``{"architecture": "svnet", "parameters": {...}}``; :func:`build_model` turns that
back into a module, so weights are loaded into a freshly built network instead of being unpickled.
All networks take ``[B, C, k, j, i]`` tensors and return logits of the same spatial size.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, Type

from torch import nn

from headseg.errors import InputError
from headseg.models.anatomynet import AnatomyNet
from headseg.models.blocks import count_feature_convolutions
from headseg.models.svnet import SVNet
from headseg.models.vnet import ResidualVNet, VNet

__all__ = [
    "ARCHITECTURES",
    "AnatomyNet",
    "ResidualVNet",
    "SVNet",
    "VNet",
    "build_model",
    "count_feature_convolutions",
    "count_parameters",
]

#: Architecture names accepted by :func:`build_model` (lower case) and their classes.
ARCHITECTURES: Dict[str, Type[nn.Module]] = {
    "svnet": SVNet,
    "vnet": VNet,
    "anatomynet": AnatomyNet,
}


def build_model(architecture: str, in_channels: int, out_channels: int, **params: Any) -> nn.Module:
    """Build a network by name, e.g. ``build_model("svnet", 1, 6, base_channels=8)``.

    Args:
        architecture: one of :data:`ARCHITECTURES` (case-insensitive).
        in_channels: image channels (1 for CT).
        out_channels: output channels = classes including background.
        **params: keyword arguments of the architecture's constructor (e.g. ``base_channels``).

    Raises:
        InputError (a ``ValueError``): unknown architecture, unknown parameter or invalid value.
    """
    key = str(architecture).strip().lower()
    if key not in ARCHITECTURES:
        raise InputError(
            f"Unknown network architecture {architecture!r}; "
            f"known architectures: {', '.join(sorted(ARCHITECTURES))}."
        )
    model_class = ARCHITECTURES[key]
    accepted = [name for name in inspect.signature(model_class.__init__).parameters if name != "self"]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise InputError(
            f"Architecture {key!r} has no parameter(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}."
        )
    try:
        return model_class(in_channels=in_channels, out_channels=out_channels, **params)
    except ValueError as error:
        raise InputError(f"Cannot build a {key!r} network: {error}") from error


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (weights, biases, BN/PReLU affine); buffers such as BN statistics excluded."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
