"""AnatomyNet: 3D squeeze-and-excitation residual U-Net with one down-sampling (the AnatomyNet paper).

Paper: W. Zhu et al., "AnatomyNet: Deep learning for fast and fully automated whole-volume segmentation
of head and neck anatomy", Medical Physics 46(2), 2019, https://arxiv.org/abs/1808.05238
"""

from __future__ import annotations

from typing import List, Sequence

import torch
from torch import nn

from headseg.models.blocks import (
    ConvNormAct,
    SEResidualBlock3d,
    crop_to_shape,
    init_weights,
    pad_to_multiple,
)

__all__ = ["AnatomyNet", "ANATOMYNET_WIDTHS"]

#: Filters of encoder blocks one to four (paper, section III.B); the decoder mirrors them.
ANATOMYNET_WIDTHS = (32, 40, 48, 56)


def _se_stage(in_channels: int, out_channels: int, blocks: int, se_reduction: int) -> nn.Sequential:
    """``blocks`` SE residual blocks; the first changes the width (projection shortcut)."""
    layers: List[nn.Module] = [SEResidualBlock3d(in_channels, out_channels, se_reduction)]
    layers.extend(SEResidualBlock3d(out_channels, out_channels, se_reduction) for _ in range(blocks - 1))
    return nn.Sequential(*layers)


class AnatomyNet(nn.Module):
    """AnatomyNet (Zhu et al., 2019), for whole-volume head-and-neck organ-at-risk segmentation.

    Architecture (``w = widths``, default 32/40/48/56; all convolutions 3x3x3 unless noted):
        * Encoder block 1: the network's only down-sampling, a stride-2 convolution to w1 + BN + LeakyReLU.
        * Encoder blocks 2-4: SE residual blocks at w2, w3, w4, all at half resolution (the paper removes
          the down-sampling of blocks 2-4).
        * Decoder blocks 3, 2, 1 (symmetric to the encoder): concatenate the previous block with the
          encoder output of the mirrored block (w4+w3 -> w3, w3+w2 -> w2, w2+w1 -> w1) and apply SE
          residual blocks; concatenation, not summation, as the paper found it better (Fig. 4).
        * Output block: a 2x2x2 stride-2 transposed convolution back to full resolution (w1/2 channels),
          concatenated with the input image, a 16-filter convolution + LeakyReLU, and the class
          convolution (``out_channels`` 3x3x3 filters, as the paper says).

    SE residual block (paper Eq. 2): ``Y = LeakyReLU(SE(F(X)) + X)`` with ``F`` = conv-BN-LeakyReLU-
    conv-BN and SE = global average pool, FC (C -> C/r), LeakyReLU, FC (C/r -> C), sigmoid, channel scale.

    Choices where the text (Fig. 1 is not in it) is not explicit, with reasons:
        * ``blocks_per_stage=2`` SE residual blocks per encoder/decoder block: the paper's ablation calls the
          network "SE-Res18" and ResNet-18 stacks two basic blocks per stage; the authors' release does too.
        * Encoder block 1 is a plain strided convolution (no SE block), as in the authors' release; the
          paper only says the down-sampling "is used in the first encoding block".
        * SE reduction ratio r = 16 (the SE paper's default; AnatomyNet does not state one).
        * Width changes use a 1x1x1 convolution + BN shortcut (ResNet projection) so Eq. 2 can add ``X``.
        * BatchNorm in every SE residual block and in block 1 (ResNet convention, kept by the authors'
          release; whole-volume training uses batch size 1, where BN still averages over the voxels).
          The output block follows the text literally: convolutions with bias, LeakyReLU, no BN.
        * LeakyReLU slope 0.01 (PyTorch default; not stated).

    Parameters: **1,459,768** with the defaults (``out_channels=10``). Output: logits
    ``[B, out_channels, k, j, i]``; the paper's soft-max is applied by the caller
    (``output_activation = "softmax"``). Any spatial size works: odd sizes are padded to even
    (replicate) and the logits cropped back.

    Args:
        in_channels: image channels (1 for CT).
        out_channels: classes including background (10 = 9 PDDCA organs + background in the paper).
        widths: filters of encoder blocks 1-4; small values (e.g. (8, 10, 12, 14)) give test models.
        blocks_per_stage: SE residual blocks per encoder block 2-4 and per decoder block.
        output_block_channels: filters of the output block's convolution (16 in the paper).
        se_reduction: squeeze-and-excitation reduction ratio.
        pad_input: pad odd sizes to even and crop back; if False, odd sizes raise ``ValueError``.
    """

    #: One 2x down-sampling: spatial sizes must be even (odd ones are padded when ``pad_input``).
    size_divisor: int = 2
    output_activation: str = "softmax"

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 10,
        widths: Sequence[int] = ANATOMYNET_WIDTHS,
        blocks_per_stage: int = 2,
        output_block_channels: int = 16,
        se_reduction: int = 16,
        pad_input: bool = True,
    ) -> None:
        super().__init__()
        widths = tuple(widths)
        if len(widths) != 4 or any(not isinstance(w, int) or w < 2 for w in widths):
            raise ValueError(f"widths must be 4 integers >= 2 (encoder blocks 1-4), got {widths}.")
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("blocks_per_stage", blocks_per_stage),
            ("output_block_channels", output_block_channels),
            ("se_reduction", se_reduction),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.widths = widths
        self.pad_input = pad_input

        self.encoder1 = ConvNormAct(in_channels, widths[0], kernel_size=3, stride=2, activation="leaky_relu")
        self.encoder2 = _se_stage(widths[0], widths[1], blocks_per_stage, se_reduction)
        self.encoder3 = _se_stage(widths[1], widths[2], blocks_per_stage, se_reduction)
        self.encoder4 = _se_stage(widths[2], widths[3], blocks_per_stage, se_reduction)
        self.decoder3 = _se_stage(widths[3] + widths[2], widths[2], blocks_per_stage, se_reduction)
        self.decoder2 = _se_stage(widths[2] + widths[1], widths[1], blocks_per_stage, se_reduction)
        self.decoder1 = _se_stage(widths[1] + widths[0], widths[0], blocks_per_stage, se_reduction)
        up_channels = max(1, widths[0] // 2)
        self.upsample = nn.ConvTranspose3d(widths[0], up_channels, kernel_size=2, stride=2)
        self.output_conv = nn.Sequential(
            nn.Conv3d(up_channels + in_channels, output_block_channels, kernel_size=3, padding=1),
            nn.LeakyReLU(negative_slope=0.01, inplace=True),
        )
        self.classifier = nn.Conv3d(output_block_channels, out_channels, kernel_size=3, padding=1)
        init_weights(self, "leaky_relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"AnatomyNet expects [batch, {self.in_channels}, k, j, i], got shape {tuple(x.shape)}."
            )
        spatial = tuple(int(size) for size in x.shape[2:])
        if any(size % self.size_divisor for size in spatial):
            if not self.pad_input:
                raise ValueError(
                    f"AnatomyNet needs even spatial sizes, got {spatial}; "
                    "pad the input or use pad_input=True."
                )
            x, spatial = pad_to_multiple(x, self.size_divisor)
        e1 = self.encoder1(x)
        e2 = self.encoder2(e1)
        e3 = self.encoder3(e2)
        e4 = self.encoder4(e3)
        d3 = self.decoder3(torch.cat([e4, e3], dim=1))
        d2 = self.decoder2(torch.cat([d3, e2], dim=1))
        d1 = self.decoder1(torch.cat([d2, e1], dim=1))
        out = self.output_conv(torch.cat([self.upsample(d1), x], dim=1))
        return crop_to_shape(self.classifier(out), spatial)
