"""One onnxruntime session per graph: provider choice, thread counts, one blocking `run`.

No asyncio and no transport here: the in-process engine and a Redis worker both wrap it.
"""

from __future__ import annotations

import ctypes.util
import logging

import numpy as np
import onnxruntime as ort

from service.engine.manifest import Manifest

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
ORT_ERROR = 3  # onnxruntime log severity: 0 verbose ... 3 error, 4 fatal


def cuda_usable() -> bool:
    """CUDA is worth asking for only with the GPU build and an NVIDIA driver present.

    Asking for it without a driver makes onnxruntime log a screen of errors before it falls back.
    """
    return (
        ort.get_device() == "GPU"
        and CUDA in ort.get_available_providers()
        and ctypes.util.find_library("cuda") is not None
    )


def choose_providers(requested: str = "") -> list[str]:
    """`requested`: comma-separated names (VDIS_PROVIDERS); empty: CUDA when usable, then CPU."""
    if requested:
        return [p.strip() for p in requested.split(",") if p.strip()]
    return [CUDA, CPU] if cuda_usable() else [CPU]


class OnnxRunner:
    """Owns the encoder, decoder and prior sessions of one exported model."""

    def __init__(self, manifest: Manifest, providers: list[str] | None = None,
                 intra_op_threads: int = 0, inter_op_threads: int = 0):
        self.manifest = manifest
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        options.log_severity_level = ORT_ERROR
        providers = providers or choose_providers()
        self.sessions = {
            name: ort.InferenceSession(str(path), sess_options=options, providers=providers)
            for name, path in manifest.files.items()
        }
        self.outputs = {n: [o.name for o in s.get_outputs()] for n, s in self.sessions.items()}
        # What onnxruntime actually uses (it drops a provider it cannot start).
        self.provider = self.sessions["encoder"].get_providers()[0]
        log.info("model %s loaded on %s", manifest.name, self.provider)

    def check(self, graph: str, inputs: dict[str, np.ndarray]) -> None:
        """ValueError unless `inputs` are exactly what `graph` takes (names, float32, fixed axes).

        For inputs from another process (a Redis worker's jobs), before they reach a batch.
        """
        if graph not in self.sessions:
            raise ValueError(f"no graph {graph!r}; there are {sorted(self.sessions)}")
        specs = {i.name: i for i in self.sessions[graph].get_inputs()}
        if set(inputs) != set(specs):
            raise ValueError(f"{graph} takes {sorted(specs)}, not {sorted(inputs)}")
        for name, array in inputs.items():
            expected = specs[name].shape  # ints are fixed axes, strings are dynamic ones
            fits = array.ndim == len(expected) and all(
                not isinstance(n, int) or n == m
                for n, m in zip(expected, array.shape, strict=False))
            if array.dtype != np.float32 or not fits:
                raise ValueError(f"{graph}.{name} must be float32 {expected}, not "
                                 f"{array.dtype} {list(array.shape)}")

    def run(self, graph: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Blocking: one call of `graph` on float32 arrays with a leading batch axis."""
        outputs = self.sessions[graph].run(self.outputs[graph], inputs)
        return dict(zip(self.outputs[graph], outputs, strict=True))
