"""Checkpoint -> bundle: ONNX graphs, C binaries, TensorRT engines and parity checks (see docs/DESIGN)."""
