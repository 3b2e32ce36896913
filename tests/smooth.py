"""ReLU -> SiLU, for tests that compare two float32 computations of the same updates.

Two schedules that sum in different orders differ by ~1e-7 after one step; a ReLU whose input
is that close to zero flips, and the gradient jumps by ~1e-3. With SiLU the gradient is a smooth
function of the parameters, so round-off stays round-off (tests/masking/test_adios.py measures it).
"""

from torch import nn


def relu_to_silu(*roots: nn.Module | None) -> None:
    for root in roots:
        for module in list(root.modules()) if root is not None else []:
            for name, child in module.named_children():
                if isinstance(child, nn.ReLU):
                    setattr(module, name, nn.SiLU())
