"""Vision Transformer backbones (Tiny, Small) on torchvision's implementation.

The classification head is replaced by an identity, so the model returns the class-token feature
after the final layer norm. Patch size follows the image size so that small images still give a
useful token grid (8x8 tokens below 96 px, patch 16 at 96 px and above as in the ADIOS paper).

``forward(x, keep)`` encodes only the patch tokens listed in ``keep`` (masked-token models, MAE
style): every patch gets its own position embedding before the others are dropped, so a kept
token carries where it came from, and the dropped patches never enter the transformer. Without
``keep`` it is torchvision's forward, all tokens.

``init="timm"`` re-initialises the weights as the reference's timm ViT (:func:`timm_init_`); the
default keeps torchvision's initialisation. docs/fidelity.md compares the two.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.models import VisionTransformer

__all__ = ["VIT_INITS", "ViTBackbone", "ViTInit", "patch_size_for", "timm_init_", "vit_small",
           "vit_tiny"]

ViTInit = Literal["torchvision", "timm"]
VIT_INITS: tuple[str, ...] = ("torchvision", "timm")


def patch_size_for(image_size: int) -> int:
    """Default patch size: 16 from 96 px up, otherwise an 8x8 token grid (32 px -> 4)."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"patch_size_for: image_size must be an int >= 8, got {image_size!r}")
    return 16 if image_size >= 96 else image_size // 8


def _trunc_normal_002(tensor: Tensor) -> None:
    """timm's ``trunc_normal_(std=.02)``: its cut-offs a=-2, b=2 are absolute values, 100 std
    out, so this is a plain N(0, 0.02^2) in effect (std 0.02, not the 0.88 x 0.02 of a 2-sigma
    cut). torch's sampler is the same inverse-CDF method timm's is."""
    nn.init.trunc_normal_(tensor, mean=0.0, std=0.02, a=-2.0, b=2.0)


def timm_init_(model: VisionTransformer) -> VisionTransformer:
    """Re-initialise a torchvision ViT in place as timm's ``VisionTransformer(weight_init='')``
    initialises it, in the timm of the reference (0.4.12 to 0.5.4: the releases
    ``pip install timm`` gave while its code was written; see docs/fidelity.md):

    - position embedding (class token's slot included) and class token: truncated normal, std
      0.02 (timm 0.6 and later draw the class token from N(0, 1e-6^2) instead);
    - every ``nn.Linear``: truncated normal, std 0.02, bias 0. Here these are each block's MLP
      (``mlp.0``, ``mlp.3``: timm's fc1, fc2) and the attention's output projection
      (``self_attention.out_proj``: timm's ``attn.proj``); timm's ``attn.qkv`` Linear is
      ``self_attention.in_proj_weight``/``in_proj_bias``, which gets the same rule as one
      (3 x width, width) matrix;
    - every LayerNorm: weight 1, bias 0;
    - the patch embedding (``conv_proj``, timm's ``patch_embed.proj``): PyTorch's default conv
      init, which timm leaves in place: weight and bias uniform in +-1 / sqrt(fan_in).

    A classification head, where present, is a Linear and gets the Linear rule, as timm's
    ``self.apply`` gives its head (the ADIOS backbone has none: ``heads`` is an identity).
    """
    if not isinstance(model.conv_proj, nn.Conv2d):
        raise ValueError("timm_init_: expects torchvision's plain patch conv (no conv stem)")
    with torch.no_grad():
        _trunc_normal_002(model.encoder.pos_embedding)
        _trunc_normal_002(model.class_token)
        for module in model.modules():
            if isinstance(module, nn.Linear):
                _trunc_normal_002(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.MultiheadAttention):
                if module.in_proj_weight is None:  # separate q/k/v weights: not timm's layout
                    raise ValueError("timm_init_: attention without a packed in_proj_weight")
                _trunc_normal_002(module.in_proj_weight)
                if module.in_proj_bias is not None:
                    nn.init.zeros_(module.in_proj_bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        model.conv_proj.reset_parameters()
    return model


class ViTBackbone(VisionTransformer):
    """torchvision ViT returning class-token features of size ``out_dim = hidden_dim``."""

    def __init__(
        self,
        image_size: int,
        patch_size: int | None,
        num_layers: int,
        num_heads: int,
        hidden_dim: int,
        mlp_dim: int,
        init: ViTInit = "torchvision",
    ) -> None:
        if init not in VIT_INITS:
            raise ValueError(f"ViT: init must be 'torchvision' or 'timm', got {init!r}")
        if patch_size is None:
            patch_size = patch_size_for(image_size)
        if patch_size < 1 or image_size % patch_size != 0:
            raise ValueError(
                f"ViT: image_size {image_size} must be divisible by patch_size {patch_size}"
            )
        super().__init__(
            image_size=image_size,
            patch_size=patch_size,
            num_layers=num_layers,
            num_heads=num_heads,
            hidden_dim=hidden_dim,
            mlp_dim=mlp_dim,
        )
        self.heads = nn.Identity()
        self.out_dim = hidden_dim
        self.grid = image_size // patch_size  # tokens per side; patch i sits at (i // g, i % g)
        if init == "timm":
            timm_init_(self)

    @property
    def num_patches(self) -> int:
        return self.grid**2

    def forward_tokens(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """Final-layer-norm token features (B, 1 + K, D): the class token, then the kept patches
        in the order of ``keep`` (B, K) patch indices (row-major on the grid); all patches when
        ``keep`` is None."""
        tokens = self._process_input(x) + self.encoder.pos_embedding[:, 1:]
        if keep is not None:
            if keep.dim() != 2 or keep.shape[0] != x.shape[0]:
                raise ValueError(
                    f"ViT: keep must be (batch, kept) patch indices, got {tuple(keep.shape)}"
                )
            index = keep.to(tokens.device, torch.long).unsqueeze(-1)
            tokens = tokens.gather(1, index.expand(-1, -1, tokens.shape[-1]))
        cls = (self.class_token + self.encoder.pos_embedding[:, :1]).expand(x.shape[0], -1, -1)
        sequence = torch.cat([cls, tokens], dim=1)
        return self.encoder.ln(self.encoder.layers(self.encoder.dropout(sequence)))

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """Class-token features (B, D) of all patches, or of the ``keep`` subset only."""
        return self.forward_tokens(x, keep)[:, 0]


def vit_tiny(
    image_size: int, patch_size: int | None = None, init: ViTInit = "torchvision"
) -> ViTBackbone:
    """ViT-Tiny: 12 layers, width 192, 3 heads, MLP 768; randomly initialised (``init``)."""
    return ViTBackbone(
        image_size, patch_size, num_layers=12, num_heads=3, hidden_dim=192, mlp_dim=768,
        init=init,
    )


def vit_small(
    image_size: int, patch_size: int | None = None, init: ViTInit = "torchvision"
) -> ViTBackbone:
    """ViT-Small: 12 layers, width 384, 6 heads, MLP 1536; randomly initialised (``init``)."""
    return ViTBackbone(
        image_size, patch_size, num_layers=12, num_heads=6, hidden_dim=384, mlp_dim=1536,
        init=init,
    )
