"""ResNet-18 feature extractor with a width knob and a CIFAR stem.

Module names match :func:`torchvision.models.resnet18` (minus ``fc``) so checkpoints move between
the two, and every batch norm is an adios :class:`~adios.models.norm.BatchNorm2d` so that
:func:`~adios.models.norm.batch_groups` and :func:`~adios.models.norm.frozen_bn_stats` reach it.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

from adios.models.norm import BatchNorm2d

__all__ = ["ResNet18"]

_BLOCKS_PER_STAGE = (2, 2, 2, 2)


class ResNet18(nn.Module):
    """ResNet-18 returning globally pooled features of size ``out_dim = 8 * width``.

    ``stem="cifar"`` uses a 3x3 stride-1 first convolution and no max-pool, which keeps enough
    resolution for 32-64 px images; ``"imagenet"`` is torchvision's 7x7 stride-2 conv + max-pool.
    ``"cifar-reference"`` is the reference code's 32 px stem: the 3x3 stride-1 conv with padding
    2 (a 32 px input gives 34x34 maps) and PyTorch's default conv init instead of kaiming.
    ``zero_init_residual`` zeroes each block's last BN weight so blocks start as identities.
    """

    def __init__(
        self,
        width: int = 64,
        stem: Literal["cifar", "cifar-reference", "imagenet"] = "cifar",
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"ResNet18: width must be a positive int, got {width!r}")
        if stem in ("cifar", "cifar-reference"):
            padding = 2 if stem == "cifar-reference" else 1
            self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=padding, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        elif stem == "imagenet":
            self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            raise ValueError(
                f"ResNet18: stem must be 'cifar', 'cifar-reference' or 'imagenet', got {stem!r}"
            )
        self.bn1 = BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)

        channels = width
        stages = []
        for stage, num_blocks in enumerate(_BLOCKS_PER_STAGE):
            stage_channels = width * 2**stage
            stride = 1 if stage == 0 else 2
            stages.append(self._make_stage(channels, stage_channels, num_blocks, stride))
            channels = stage_channels
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.out_dim = channels

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                if module is self.conv1 and stem == "cifar-reference":
                    continue  # the reference replaces torchvision's conv1 after its init
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, BasicBlock):
                    nn.init.zeros_(module.bn2.weight)

    @staticmethod
    def _make_stage(in_channels: int, channels: int, num_blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or in_channels != channels:
            downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, kernel_size=1, stride=stride, bias=False),
                BatchNorm2d(channels),
            )
        blocks = [BasicBlock(in_channels, channels, stride, downsample, norm_layer=BatchNorm2d)]
        blocks += [
            BasicBlock(channels, channels, norm_layer=BatchNorm2d) for _ in range(num_blocks - 1)
        ]
        return nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)
