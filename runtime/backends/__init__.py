"""Runtime backends, registered by name: ``native`` (the C library), ``onnxruntime`` and ``tensorrt``.

    from metaedge.runtime.backends import Backend, register_backend, backend_names
    register_backend("my-backend", MyBackend)     # then Model.load(path, backend="my-backend"), --backend my-backend

:mod:`.base` holds the :class:`Backend` protocol, the registry and the guard rule; :mod:`.machine` what this
machine can run (for the device profiles' choice). Each backend module imports its library only when used.
"""

from .base import Backend, Plan, Samples, backend_names, get_backend, guarded_steps, kept_steps, register_backend
from .machine import available_backends, cuda_gpus
from .native import NativeBackend
from .onnxruntime import OnnxRuntimeBackend
from .tensorrt import TensorRTBackend

register_backend("native", NativeBackend)
register_backend("onnxruntime", OnnxRuntimeBackend)
register_backend("tensorrt", TensorRTBackend)

__all__ = ["Backend", "NativeBackend", "OnnxRuntimeBackend", "Plan", "Samples", "TensorRTBackend",
           "available_backends", "backend_names", "cuda_gpus", "get_backend", "guarded_steps", "kept_steps",
           "register_backend"]
