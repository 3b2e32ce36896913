"""adios: adversarial masked-image self-supervised learning (ADIOS) in PyTorch."""

__version__ = "0.1.0"
