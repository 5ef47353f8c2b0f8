"""devicefit: fit deep neural networks to embedded devices.

Stages live in subpackages, imported explicitly (`devicefit.data`, `devicefit.models`, ...);
importing `devicefit` itself stays cheap and torch-free.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
