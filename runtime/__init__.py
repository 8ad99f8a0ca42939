"""On-device runtime: bundle reader, guarded adaptation and prediction.

Must never import torch, onnx, ``metaedge.sdk`` or ``metaedge.export``.
"""
