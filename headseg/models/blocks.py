"""Building blocks shared by the HeadSeg networks (tensors are ``[B, C, k, j, i]``).

Conv + norm + activation is written once here so the three architectures differ only in how they
stack blocks, which is what their papers actually change.
"""

from __future__ import annotations

import math
from typing import Any, List, Sequence, Tuple, cast

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "make_activation",
    "ConvNormAct",
    "VNetInputStage",
    "VNetDownStage",
    "VNetUpStage",
    "SqueezeExcitation3d",
    "SEResidualBlock3d",
    "pad_to_multiple",
    "crop_to_shape",
    "count_feature_convolutions",
    "init_weights",
]

ACTIVATIONS = ("relu", "prelu", "leaky_relu")


def make_activation(name: str, channels: int) -> nn.Module:
    """Return a fresh activation module; PReLU gets one learnable slope per channel as in V-Net."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "prelu":
        return nn.PReLU(num_parameters=channels)
    if name == "leaky_relu":
        return nn.LeakyReLU(negative_slope=0.01, inplace=True)
    raise ValueError(f"Unknown activation {name!r}; use one of {', '.join(ACTIVATIONS)}.")


class ConvNormAct(nn.Sequential):
    """3D convolution -> BatchNorm -> activation (activation optional).

    The convolution has no bias because BatchNorm's shift makes it redundant.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        activation: str | None = "relu",
    ) -> None:
        layers: List[nn.Module] = [
            nn.Conv3d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=(kernel_size - 1) // 2,
                bias=False,
            ),
            nn.BatchNorm3d(out_channels),
        ]
        if activation is not None:
            layers.append(make_activation(activation, out_channels))
        super().__init__(*layers)


class _ResidualConvStack(nn.Module):
    """``depth`` same-width convolutions whose output is added to the stack's input (V-Net stage body).

    All but the last convolution are conv-BN-act; the last is conv-BN, then the residual is added and
    the activation applied, so every convolution is still followed by BN and an activation.
    """

    def __init__(self, channels: int, depth: int, kernel_size: int, activation: str) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"A V-Net stage needs at least one convolution, got depth={depth}.")
        convs: List[nn.Module] = [
            ConvNormAct(channels, channels, kernel_size, activation=activation) for _ in range(depth - 1)
        ]
        convs.append(ConvNormAct(channels, channels, kernel_size, activation=None))
        self.convs = nn.Sequential(*convs)
        self.activation = make_activation(activation, channels)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.activation(self.convs(x) + residual)


class VNetInputStage(nn.Module):
    """First V-Net stage: the input (tiled across channels) is the residual of ``depth`` convolutions.

    Tiling rather than a learned projection is V-Net's choice; it keeps the stage parameter-free on the
    shortcut and works for any ``in_channels <= channels``.
    """

    def __init__(
        self, in_channels: int, channels: int, depth: int, kernel_size: int, activation: str
    ) -> None:
        super().__init__()
        if in_channels > channels:
            raise ValueError(
                f"in_channels ({in_channels}) must not exceed the first stage width ({channels}); "
                "raise base_channels."
            )
        self.channels = channels
        self.first = ConvNormAct(
            in_channels, channels, kernel_size, activation=None if depth == 1 else activation
        )
        self.body = _ResidualConvStack(channels, depth - 1, kernel_size, activation) if depth > 1 else None
        self.activation = make_activation(activation, channels) if depth == 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_channels = int(x.shape[1])
        if in_channels == 1 or in_channels == self.channels:
            residual = x  # a single channel broadcasts over all of them; no copy needed
        else:
            repeats = math.ceil(self.channels / in_channels)
            residual = x.repeat(1, repeats, 1, 1, 1)[:, : self.channels]
        out = self.first(x)
        if self.body is None:
            assert self.activation is not None
            return self.activation(out + residual)
        return self.body(out, residual)


class VNetDownStage(nn.Module):
    """2x2x2 stride-2 convolution doubling the channels, then a residual stack of ``depth`` convolutions."""

    def __init__(self, in_channels: int, depth: int, kernel_size: int, activation: str) -> None:
        super().__init__()
        out_channels = 2 * in_channels
        self.down = ConvNormAct(in_channels, out_channels, kernel_size=2, stride=2, activation=activation)
        self.body = _ResidualConvStack(out_channels, depth, kernel_size, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        down = self.down(x)
        return self.body(down, down)


class VNetUpStage(nn.Module):
    """Transposed 2x2x2 up-sampling to ``out_channels // 2``, concatenation with the skip, residual stack.

    As in V-Net, the concatenation (up-sampled + skip = ``out_channels``) is both the input and the
    residual of the convolution stack.
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        depth: int,
        kernel_size: int,
        activation: str,
    ) -> None:
        super().__init__()
        up_channels = out_channels - skip_channels
        if up_channels < 1:
            raise ValueError(f"out_channels ({out_channels}) must exceed skip_channels ({skip_channels}).")
        self.up = nn.Sequential(
            nn.ConvTranspose3d(in_channels, up_channels, kernel_size=2, stride=2, bias=False),
            nn.BatchNorm3d(up_channels),
            make_activation(activation, up_channels),
        )
        self.body = _ResidualConvStack(out_channels, depth, kernel_size, activation)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        merged = torch.cat([self.up(x), skip], dim=1)
        return self.body(merged, merged)


class SqueezeExcitation3d(nn.Module):
    """Channel recalibration (Hu et al., 2018): global average pool, FC, act, FC, sigmoid, scale."""

    def __init__(self, channels: int, reduction: int = 16, activation: str = "leaky_relu") -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.squeeze_to_hidden = nn.Linear(channels, hidden)
        self.activation = make_activation(activation, hidden)
        self.hidden_to_scale = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3, 4))
        scale = torch.sigmoid(self.hidden_to_scale(self.activation(self.squeeze_to_hidden(pooled))))
        return x * scale[:, :, None, None, None].to(x.dtype)


class SEResidualBlock3d(nn.Module):
    """3D squeeze-and-excitation residual block (AnatomyNet Eq. 2): ``Y = G(SE(F(X)) + X)``.

    ``F`` is conv-BN-act-conv-BN (a ResNet basic block). When the width changes, ``X`` goes through a
    1x1x1 convolution + BN so it can be added (the usual ResNet projection shortcut).
    """

    def __init__(
        self, in_channels: int, out_channels: int, se_reduction: int = 16, activation: str = "leaky_relu"
    ) -> None:
        super().__init__()
        self.residual_branch = nn.Sequential(
            ConvNormAct(in_channels, out_channels, 3, activation=activation),
            ConvNormAct(out_channels, out_channels, 3, activation=None),
        )
        self.se = SqueezeExcitation3d(out_channels, se_reduction, activation)
        self.shortcut: nn.Module = (
            nn.Identity()
            if in_channels == out_channels
            else ConvNormAct(in_channels, out_channels, kernel_size=1, activation=None)
        )
        self.activation = make_activation(activation, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.se(self.residual_branch(x)) + self.shortcut(x))


def pad_to_multiple(x: torch.Tensor, multiple: int) -> Tuple[torch.Tensor, Tuple[int, int, int]]:
    """Pad the three spatial axes at their far end up to a multiple of ``multiple``.

    Replicate padding: the border voxels continue, so no artificial edge (zero is not "air" after
    intensity normalisation). Returns the padded tensor and the original spatial shape for cropping.
    """
    if x.dim() != 5:
        raise ValueError(f"Expected a 5D tensor [batch, channel, k, j, i], got shape {tuple(x.shape)}.")
    spatial = (int(x.shape[2]), int(x.shape[3]), int(x.shape[4]))
    extra = [(-size) % multiple for size in spatial]
    if not any(extra):
        return x, spatial
    # F.pad lists the last axis first: (i_before, i_after, j_before, j_after, k_before, k_after).
    padding = (0, extra[2], 0, extra[1], 0, extra[0])
    return F.pad(x, padding, mode="replicate"), spatial


def crop_to_shape(x: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
    """Undo :func:`pad_to_multiple`."""
    return x[:, :, : spatial[0], : spatial[1], : spatial[2]]


def count_feature_convolutions(model: nn.Module) -> int:
    """Number of stride-1 spatial convolutions (kernel > 1): the "conv layers" papers usually count.

    Excluded: 2x2x2 stride-2 down-sampling convolutions, transposed up-sampling convolutions and 1x1x1
    convolutions (projection shortcuts, class heads), because V-Net's "21 layers" counts only the
    5x5x5 convolutions inside its stages.
    """
    count = 0
    for module in model.modules():
        if isinstance(module, nn.Conv3d) and max(module.kernel_size) > 1 and max(module.stride) == 1:
            count += 1
    return count


def init_weights(model: nn.Module, nonlinearity: str = "relu") -> None:
    """He-normal convolution weights (suited to ReLU-family nets), zero biases, BN at identity."""
    for module in model.modules():
        if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity=cast(Any, nonlinearity))
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm3d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
