"""vdis service: FastAPI over the exported ONNX model (no torch, no `model/`)."""
