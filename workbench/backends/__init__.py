"""Execution backends. Only modules in this package import onnxruntime, tensorrt, tensorrt_rtx or cuda,
and only inside functions, so ``import workbench`` stays light."""

from .base import Backend, Engine

__all__ = ["Backend", "Engine"]
