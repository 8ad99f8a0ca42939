"""The ``tensorrt`` backend: a bundle's TensorRT plans run on the GPU, with the same interface as ONNX Runtime.

Each engine is wrapped in an :class:`EngineSession` whose ``run(None, feeds) -> [outputs]`` matches
``onnxruntime.InferenceSession.run``, so :class:`TensorRTBackend` is the ``onnxruntime`` backend's solvers (guard
and rollback included) over other sessions:

    sessions = load_sessions(bundle, "jetson-orin-nano")    # {"forward": ..., "adapt_steps": ..., ...}

The forward engine is built refittable with the adapted parameters as weights (``export/tensorrt.py``):
:class:`RefitForwardSession` takes the same ``theta.*`` feeds as the ONNX graph and, when they differ from the
weights the engine holds, applies them with ``trt.Refitter.set_named_weights`` + ``refit_cuda_engine`` before
running. Adaptation runs through the adapt-step engines (float32) the same way as through ONNX Runtime.

Device memory and copies use NVIDIA's ``cuda-python`` (``cuda.bindings.runtime``, or ``cuda.cudart`` in releases
before 12.6): ``cudaMalloc``, ``cudaMemcpyAsync``, one stream, ``execute_async_v3``. ``tensorrt`` and
``cuda-python`` are imported only when a session is made. Untested here: no TensorRT and no GPU in this workplace.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from ...errors import InputError, UnavailableError
from ..bundle import Bundle, BundleError
from .base import Plan
from .onnxruntime import OnnxRuntimeBackend, session


class TensorRTUnavailable(UnavailableError):
    """TensorRT, cuda-python or a CUDA GPU is missing."""


def _imports() -> tuple[Any, Any]:
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTUnavailable("TensorRT is not installed (on a Jetson: JetPack's python3-libnvinfer)") from e
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as e:
            raise TensorRTUnavailable("cuda-python is not installed (pip install cuda-python)") from e
    return trt, cudart


def _check(result: tuple, what: str) -> Any:
    """cuda-python calls return ``(error, *values)``; raise on an error, return the value(s)."""
    err, *values = result
    if int(err) != 0:
        raise TensorRTUnavailable(f"CUDA {what} failed with error {int(err)}")
    return values[0] if len(values) == 1 else tuple(values)


class EngineSession:
    """One deserialized engine and its execution context; ``run`` mirrors ``onnxruntime.InferenceSession.run``."""

    def __init__(self, plan: bytes, name: str, output_order: list[str] | None = None) -> None:
        self.trt, self.cudart = _imports()
        trt = self.trt
        self.name = name
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise BundleError(f"{name}: TensorRT could not deserialize the plan (built for another TensorRT version "
                              "or GPU?); rebuild it on this device with metaedge export --format tensorrt")
        self.context = self.engine.create_execution_context()
        self.stream = _check(self.cudart.cudaStreamCreate(), "cudaStreamCreate")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == mode]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) != mode]
        if output_order is not None and sorted(output_order) != sorted(outputs):
            raise BundleError(f"{name}: the engine's outputs {outputs} are not the graph's {output_order}; rebuild it")
        self.outputs = list(output_order or outputs)
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def _device(self, name: str, nbytes: int) -> int:
        """A device buffer of at least ``nbytes`` for tensor ``name``, grown when a larger shape comes."""
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _check(self.cudart.cudaFree(ptr), "cudaFree")
            ptr = int(_check(self.cudart.cudaMalloc(max(nbytes, 1)), "cudaMalloc"))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        cudart = self.cudart
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        missing = sorted(set(self.inputs) - set(feeds))
        if missing:
            raise InputError(f"{self.name}: missing inputs {', '.join(missing)}")
        hold = []  # host arrays must live until the stream is synchronised
        for name in self.inputs:
            host = np.ascontiguousarray(feeds[name], dtype=self.dtypes[name])
            hold.append(host)
            if not self.context.set_input_shape(name, host.shape):
                raise InputError(f"{self.name}: input {name} of shape {host.shape} is outside the engine's "
                                 "optimization profile; rebuild with larger --max-shots / --max-batch")
            ptr = self._device(name, host.nbytes)
            _check(cudart.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, h2d, self.stream), "copy in")
            self.context.set_tensor_address(name, ptr)
        results = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            host = np.empty(shape, self.dtypes[name])
            results[name] = host
            self.context.set_tensor_address(name, self._device(name, host.nbytes))
        if not self.context.execute_async_v3(self.stream):
            raise RuntimeError(f"{self.name}: TensorRT execution failed")
        for name, host in results.items():
            ptr, _ = self._buffers[name]
            _check(cudart.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, d2h, self.stream), "copy out")
        _check(cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        del hold
        wanted = output_names or self.outputs
        # the runtime computes in float32 whatever the engine's I/O precision
        return [results[n].astype(np.float32) if results[n].dtype == np.float16 else results[n] for n in wanted]

    def __del__(self) -> None:
        for ptr, _ in getattr(self, "_buffers", {}).values():
            self.cudart.cudaFree(ptr)


class RefitForwardSession(EngineSession):
    """The forward engine: ``theta.*`` feeds are refitted into the engine's weights when they change."""

    def __init__(self, plan: bytes, name: str, output_order: list[str] | None = None,
                 weights_dtype: str = "float32") -> None:
        super().__init__(plan, name, output_order)
        if not self.engine.refittable:
            raise BundleError(f"{name}: the forward engine was not built refittable; rebuild it with metaedge export")
        self.weights_dtype = np.dtype(weights_dtype)
        self.refitter = self.trt.Refitter(self.engine, self.logger)
        self._current: dict[str, np.ndarray] = {}

    def refit(self, theta: dict[str, np.ndarray]) -> None:
        """Apply the adapted parameters (``theta.<name>`` arrays) to the engine with the Refitter."""
        kept = []  # trt.Weights borrows the numpy memory: keep it alive until the refit is done
        for name, value in theta.items():
            w = np.ascontiguousarray(value, dtype=self.weights_dtype)
            kept.append(w)
            if not self.refitter.set_named_weights(name, self.trt.Weights(w)):
                raise BundleError(f"{self.name}: the engine has no refittable weights named {name}")
        if not self.refitter.refit_cuda_engine():
            missing = self.refitter.get_missing_weights()
            raise RuntimeError(f"{self.name}: refit failed (weights not given: {', '.join(missing) or 'none'})")
        self._current = {k: np.array(v, copy=True) for k, v in theta.items()}
        del kept

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        theta = {k: v for k, v in feeds.items() if k.startswith("theta.")}
        if theta and (theta.keys() != self._current.keys() or
                      any(not np.array_equal(v, self._current[k]) for k, v in theta.items())):
            self.refit(theta)
        return super().run(output_names, {k: v for k, v in feeds.items() if not k.startswith("theta.")})


def load_sessions(bundle: Bundle, device: str | None) -> dict[str, EngineSession]:
    """Sessions for the bundle's TensorRT plans for ``device`` by role (``forward``, ``adapt_step``,
    ``adapt_steps``, ``gauss_newton``), in place of the ONNX Runtime sessions of the same graphs."""
    entry = bundle.manifest.tensorrt.get(device) if device else None
    if not entry:
        raise BundleError(f"{bundle.path} has no TensorRT engines for {device}; build them with "
                          f"metaedge export --format tensorrt --device {device}")
    sessions: dict[str, EngineSession] = {}
    for role, file in entry.engines.items():
        plan = bundle.file(file).read_bytes()  # hash-checked when the bundle was opened
        order = list(entry.outputs[role]) if role in entry.outputs else None
        sessions[role] = (RefitForwardSession(plan, file, order, entry.forward_weights_dtype)
                          if role == "forward" else EngineSession(plan, file, order))
    return sessions


class TensorRTBackend(OnnxRuntimeBackend):
    """The bundle's TensorRT plans for the plan's device; a graph TensorRT could not build an engine for (e.g. the
    adapt step) runs on ONNX Runtime's CPU side."""

    @classmethod
    def available(cls) -> bool:
        return importlib.util.find_spec("tensorrt") is not None

    @classmethod
    def reason(cls) -> str:
        return "the tensorrt Python module is not installed (on a Jetson: JetPack's python3-libnvinfer)"

    @classmethod
    def open(cls, bundle: Bundle, plan: Plan, theta0: np.ndarray, rates: np.ndarray) -> TensorRTBackend:
        sessions: dict[str, Any] = dict(load_sessions(bundle, plan.device))
        for role, name in bundle.manifest.graphs.files().items():
            if role != "adapt_predict":  # its forward pass would bypass the TensorRT forward engine
                sessions.setdefault(role, session(bundle.file(name)))
        return cls(bundle, sessions, theta0, rates)
