"""Trained checkpoint -> ONNX graphs + manifest.json, with parity and hash verification."""
