"""What this machine can run: the ``available`` description ``metaedge.devices.choose_backend`` takes.

Cheap and side-effect free: TensorRT is looked up (not imported), the C library is loaded by ``runtime.native``,
and a CUDA GPU is asked for through the driver library (``libcuda``: ``cuInit`` + ``cuDeviceGetCount``), so no
CUDA toolkit or Python CUDA package is needed to find out.
"""

from __future__ import annotations

import ctypes
import importlib.util
from typing import Any


def cuda_gpus() -> int:
    """How many CUDA devices the driver reports (0 without a driver or a GPU)."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll", "libcuda.dylib"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return count.value
    return 0


def available_backends(import_onnxruntime: bool = True) -> dict[str, Any]:
    """``{"onnxruntime": providers or None, "tensorrt": bool, "native": bool, "cuda": bool}`` for this machine.

    With ``import_onnxruntime=False`` an installed onnxruntime is reported with its CPU provider only, without
    importing it (tens of MiB): enough to choose between the native C library and ONNX Runtime on a CPU.
    """
    if not import_onnxruntime:
        providers = ["CPUExecutionProvider"] if importlib.util.find_spec("onnxruntime") else None
    else:
        try:
            import onnxruntime

            providers = list(onnxruntime.get_available_providers())
        except ImportError:
            providers = None
    try:
        from .. import native

        has_native = bool(native.available())
    except (ImportError, OSError):
        has_native = False
    return {"onnxruntime": providers, "tensorrt": importlib.util.find_spec("tensorrt") is not None,
            "native": has_native, "cuda": cuda_gpus() > 0}
