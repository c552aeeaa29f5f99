"""One onnxruntime session per graph: provider choice, thread counts, one blocking `run`.

No asyncio and no transport here: the in-process engine and a Redis worker both wrap it.

On CUDA (decided by the providers of the created sessions, never by
`get_available_providers()`, which lists CUDA wherever the GPU build is installed):
- inputs and outputs go through IO binding: each input is read from its numpy array by one
  host-to-device copy and each output is written by one device-to-host copy straight into a
  numpy array allocated here, with no intermediate host buffers;
- a graph runs its float16 variant (manifest `variants.float16`) when VDIS_PRECISION is `auto`
  and, on this device, it stays within the variant's tolerance of float32 on the warm-up inputs;
- cuDNN's convolution algorithm search is set (VDIS_CUDNN_CONV_ALGO_SEARCH);
- every graph is run at the common shapes at startup, so that cost is not a user's first request.
"""

from __future__ import annotations

import ctypes.util
import logging
import shutil
import subprocess
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
import onnxruntime as ort

from service.engine.manifest import Manifest

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
ORT_ERROR = 3  # onnxruntime log severity: 0 verbose ... 3 error, 4 fatal
# onnxruntime's own default, EXHAUSTIVE, benchmarks every cuDNN algorithm the first time a
# convolution sees a new input shape; with dynamic B and T that is a slow first request per
# shape. HEURISTIC takes cuDNN's pick at once and is the default here.
CONV_ALGO_SEARCH = ("HEURISTIC", "EXHAUSTIVE", "DEFAULT")

# (path, sess_options=, providers=) -> an onnxruntime.InferenceSession or a stand-in (tests)
SessionFactory = Callable[..., ort.InferenceSession]


@lru_cache(maxsize=1)  # asked once per process: find_library runs ldconfig (~11 ms)
def cuda_usable() -> bool:
    """CUDA is worth asking for only with the GPU build and an NVIDIA driver present.

    Asking for it without a driver makes onnxruntime log a screen of errors before it falls back.
    Whether CUDA really runs is decided afterwards, by the created session's providers.
    """
    return (
        ort.get_device() == "GPU"
        and CUDA in ort.get_available_providers()
        and ctypes.util.find_library("cuda") is not None
    )


def choose_providers(requested: str = "", require_gpu: bool = False) -> list[str]:
    """`requested`: comma-separated names (VDIS_PROVIDERS); empty: CUDA when usable, then CPU.

    With `require_gpu` CUDA is always asked for (the session then says whether it started), and
    a requested list without it is refused.
    """
    if requested:
        providers = [p.strip() for p in requested.split(",") if p.strip()]
        if require_gpu and CUDA not in providers:
            raise RuntimeError(f"VDIS_REQUIRE_GPU is set but VDIS_PROVIDERS={requested!r} does "
                               f"not include {CUDA}")
        return providers
    return [CUDA, CPU] if require_gpu or cuda_usable() else [CPU]


def gpu_name(device_id: int) -> str | None:
    """The GPU's name from nvidia-smi (present where the NVIDIA container toolkit is), if any."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        done = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader",
                               f"--id={device_id}"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0 or not done.stdout.strip():
        return None
    return done.stdout.strip()


def difference(a: np.ndarray, b: np.ndarray) -> float:
    """Max abs difference of two outputs: codes as they are, uint8 pixels in [0, 1] (levels /
    255), the unit of a variant's tolerance."""
    if a.dtype == np.uint8:
        return float(np.max(np.abs(a.astype(np.int16) - b.astype(np.int16)), initial=0)) / 255
    return float(np.max(np.abs(a - b), initial=0.0))


class OnnxRunner:
    """Owns the encoder, decoder and prior sessions of one exported model.

    `warmup_batches`: the batch sizes run once per graph at startup (at T = the manifest's
    seq_len); None: 1 and `max_batch` on CUDA (cuDNN picks its algorithms per shape), and
    `max_batch` on CPU (onnxruntime's memory then starts at the size the largest batch needs,
    rather than growing under load: RSS +0.9% from 200 to 2000 /swaps, docs/benchmarks.md).
    `session_factory` stands in for onnxruntime.InferenceSession in tests.
    """

    def __init__(self, manifest: Manifest, providers: list[str] | None = None,
                 intra_op_threads: int = 0, inter_op_threads: int = 0, *,
                 intra_op_spinning: bool = False,
                 require_gpu: bool = False, device_id: int = 0,
                 conv_algo_search: str = "HEURISTIC", max_batch: int = 16,
                 warmup_batches: Sequence[int] | None = None,
                 session_factory: SessionFactory = ort.InferenceSession):
        if conv_algo_search not in CONV_ALGO_SEARCH:
            raise ValueError(f"conv_algo_search must be one of {CONV_ALGO_SEARCH}, not "
                             f"{conv_algo_search!r}")
        self.manifest = manifest
        self._factory = session_factory
        self._options = ort.SessionOptions()
        self._options.intra_op_num_threads = intra_op_threads
        self._options.inter_op_num_threads = inter_op_threads
        self._options.log_severity_level = ORT_ERROR
        self._options.add_session_config_entry("session.intra_op.allow_spinning",
                                               "1" if intra_op_spinning else "0")
        providers = providers or choose_providers(require_gpu=require_gpu)
        self._providers = [
            (CUDA, {"device_id": device_id, "cudnn_conv_algo_search": conv_algo_search})
            if p == CUDA else p for p in providers]
        self.sessions = {name: self._session(path) for name, path in manifest.files.items()}
        self.outputs = {n: [o.name for o in s.get_outputs()] for n, s in self.sessions.items()}
        # What onnxruntime actually uses: it drops a provider it cannot start (no driver, no
        # cuDNN, ...) and runs on the next one, with a log line at most.
        used = {name: s.get_providers() for name, s in self.sessions.items()}
        self.on_cuda = all(CUDA in p for p in used.values())
        if require_gpu and not self.on_cuda:
            raise RuntimeError(
                f"VDIS_REQUIRE_GPU is set but onnxruntime {ort.__version__} ({ort.get_device()} "
                f"build) started {used} with {CUDA} asked for: no usable GPU. Check the NVIDIA "
                "driver (nvidia-smi), the container's GPU reservation, and that CUDA 13 and "
                "cuDNN 9 libraries are installed; or unset VDIS_REQUIRE_GPU to run on CPU")
        self.provider = self.sessions["encoder"].get_providers()[0]
        self.device = f"cuda:{device_id}" if self.on_cuda else "cpu"
        self.device_name = gpu_name(device_id) if self.on_cuda else None
        self.conv_algo_search = conv_algo_search if self.on_cuda else None
        self.precisions = {name: "float32" if manifest.precision == "auto" else manifest.precision
                           for name in self.sessions}
        if warmup_batches is None:  # on CPU the largest batch: its memory is taken at start
            warmup_batches = sorted({1, max_batch}) if self.on_cuda else (max_batch,)
        self.warmup_batches = tuple(warmup_batches)
        if self.on_cuda and manifest.precision == "auto":
            self._adopt_float16()
        for graph in self.sessions:
            for batch in self.warmup_batches:
                self.run(graph, self.example_inputs(graph, batch))
        log.info("model %s loaded on %s (%s), precisions %s, warmed up at B in %s",
                 manifest.name, self.provider, self.device_name or self.device, self.precisions,
                 list(self.warmup_batches))

    def _session(self, path) -> ort.InferenceSession:
        return self._factory(str(path), sess_options=self._options, providers=self._providers)

    def _adopt_float16(self) -> None:
        """Each graph's float16 variant replaces float32 where it is within its tolerance here."""
        for graph, (path, tolerance) in self.manifest.variant_files("float16").items():
            half = self._session(path)
            if CUDA not in half.get_providers():
                continue
            worst = 0.0
            for batch in self.warmup_batches or (1,):
                inputs = self.example_inputs(graph, batch)
                full = self._run_bound(self.sessions[graph], graph, inputs)
                approx = self._run_bound(half, graph, inputs)
                worst = max(worst, max(difference(full[k], approx[k]) for k in full))
            if np.isfinite(worst) and worst <= tolerance:
                self.sessions[graph], self.precisions[graph] = half, "float16"
            else:
                log.warning("the float16 %s differs from float32 by %.3g here, over its "
                            "tolerance %.3g: float32 it is", graph, worst, tolerance)

    def example_inputs(self, graph: str, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
        """Inputs of `graph` at B=batch, T=seq_len: uint8 pixels uniform, codes N(0, I)."""
        rng = np.random.default_rng(seed)
        sizes = {"B": batch, "T": self.manifest.seq_len}
        inputs = {}
        for spec in self.manifest.graph(graph).inputs:
            shape = [sizes.get(d, d) if isinstance(d, str) else d for d in spec.shape]
            if spec.dtype == "uint8":
                inputs[spec.name] = rng.integers(0, 256, shape, np.uint8)
            else:
                inputs[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        return inputs

    def check(self, graph: str, inputs: dict[str, np.ndarray]) -> None:
        """ValueError unless `inputs` are exactly what `graph` takes (names, the manifest's
        dtypes, fixed axes). For arrays from another process, before they reach a batch."""
        if graph not in self.sessions:
            raise ValueError(f"no graph {graph!r}; there are {sorted(self.sessions)}")
        specs = {i.name: i for i in self.manifest.graph(graph).inputs}
        if set(inputs) != set(specs):
            raise ValueError(f"{graph} takes {sorted(specs)}, not {sorted(inputs)}")
        for name, array in inputs.items():
            expected = specs[name].shape  # ints are fixed axes, strings are dynamic ones
            fits = array.ndim == len(expected) and all(
                not isinstance(n, int) or n == m
                for n, m in zip(expected, array.shape, strict=False))
            if array.dtype != np.dtype(specs[name].dtype) or not fits:
                raise ValueError(f"{graph}.{name} must be {specs[name].dtype} {expected}, not "
                                 f"{array.dtype} {list(array.shape)}")

    def run(self, graph: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Blocking: one call of `graph` on arrays with a leading batch axis (the manifest's
        dtypes: uint8 pixels, float32 codes)."""
        if self.on_cuda:
            return self._run_bound(self.sessions[graph], graph, inputs)
        outputs = self.sessions[graph].run(self.outputs[graph], inputs)
        return dict(zip(self.outputs[graph], outputs, strict=True))

    def _run_bound(self, session, graph: str, inputs: dict[str, np.ndarray]):
        """One call through IO binding; outputs are written into numpy arrays made here."""
        binding = session.io_binding()
        sizes, bound = {}, []  # `bound` keeps any contiguous copies alive until the run is over
        for spec in self.manifest.graph(graph).inputs:
            array = np.ascontiguousarray(inputs[spec.name], spec.dtype)
            bound.append(array)
            sizes.update({d: n for d, n in zip(spec.shape, array.shape, strict=True)
                          if isinstance(d, str)})
            binding.bind_cpu_input(spec.name, array)
        outputs = {}
        for spec in self.manifest.graph(graph).outputs:
            shape = [sizes[d] if isinstance(d, str) else d for d in spec.shape]
            out = outputs[spec.name] = np.empty(shape, spec.dtype)
            binding.bind_output(spec.name, "cpu", 0, out.dtype, shape, out.ctypes.data)
        session.run_with_iobinding(binding)
        return outputs

    def status(self) -> dict:
        """Provider, device and per-graph precision, for /ready and worker heartbeats."""
        return {"provider": self.provider, "device": self.device,
                "device_name": self.device_name, "precisions": self.precisions,
                "conv_algo_search": self.conv_algo_search,
                "intra_op_threads": self._options.intra_op_num_threads}
