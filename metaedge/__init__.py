"""metaedge: meta-train few-shot adaptation on servers, adapt on devices.

The root package is thin: the version and the click CLI. The server side lives in
``metaedge.sdk``, the exporter in ``metaedge.export``, the on-device runtime in
``metaedge.runtime`` and device profiles in ``metaedge.devices``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("metaedge")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
