"""The runner's CUDA path with the provider choice injected: no GPU needed.

A stand-in session runs the real graphs on CPU but reports the providers a test gives it, so
the CUDA code (IO binding, float16 choice, warm-up, the REQUIRE_GPU check) runs for real.
"""


import numpy as np
import onnxruntime as ort
import pytest

from service.engine.local import build_runner, warmup_batches
from service.engine.manifest import Manifest, ManifestDoc, load_manifest
from service.engine.runner import CPU, CUDA, OnnxRunner, choose_providers
from tests.service.conftest import make_settings


class Sessions:
    """A session factory whose sessions claim `reported` providers and count their calls."""

    def __init__(self, reported: list[str]):
        self.reported, self.asked, self.calls = reported, [], []

    def __call__(self, path, sess_options, providers):
        self.asked.append(providers)
        return FakeSession(self, path, sess_options)


class FakeSession:
    def __init__(self, factory: Sessions, path: str, options):
        self.factory, self.path = factory, path
        self.real = ort.InferenceSession(path, sess_options=options, providers=[CPU])

    def get_providers(self):
        return list(self.factory.reported)

    def run_with_iobinding(self, binding):
        self.factory.calls.append(self.path)
        return self.real.run_with_iobinding(binding)

    def __getattr__(self, name):
        return getattr(self.real, name)


def runner(model_dir, sessions, manifest=None, **options):
    return OnnxRunner(manifest or load_manifest(model_dir, "auto"), [CUDA, CPU], 1, 1,
                      session_factory=sessions, **options)


def test_on_cuda_io_binding_float16_and_warm_up(model_dir):
    sessions = Sessions([CUDA, CPU])
    gpu = runner(model_dir, sessions, max_batch=4)
    assert gpu.on_cuda and gpu.provider == CUDA and gpu.device == "cuda:0"
    assert sessions.asked[0][1] == CPU
    cuda_options = dict(sessions.asked[0][:1])[CUDA]
    assert cuda_options == {"device_id": 0, "cudnn_conv_algo_search": "HEURISTIC"}
    manifest = gpu.manifest
    halves = manifest.variant_files("float16")
    assert halves, "the tiny model ships float16 variants"
    assert gpu.precisions == {g: "float16" if g in halves else "float32" for g in gpu.sessions}
    for graph in gpu.sessions:
        wanted = str(halves[graph][0] if graph in halves else manifest.files[graph])
        assert gpu.sessions[graph].path == wanted
    # warm-up: every graph at B = 1 and B = max_batch, after the float16 comparisons
    warm = sessions.calls[-6:]
    assert sorted(warm) == sorted(str(gpu.sessions[g].path) for g in gpu.sessions for _ in "12")
    # IO binding gives what a plain run of the same session gives
    for graph in gpu.sessions:
        inputs = gpu.example_inputs(graph, 3, seed=5)
        bound = gpu.run(graph, inputs)
        plain = gpu.sessions[graph].real.run(gpu.outputs[graph], inputs)
        assert list(bound) == gpu.outputs[graph]
        for name, array in zip(gpu.outputs[graph], plain, strict=True):
            np.testing.assert_array_equal(bound[name], array)
    assert gpu.status()["device"] == "cuda:0"


def test_a_float16_graph_over_its_tolerance_stays_float32(model_dir):
    manifest = load_manifest(model_dir, "auto")
    raw = manifest.doc.model_dump()
    for spec in raw["variants"]["float16"].values():
        spec["tolerance"] = 0.0
    strict = Manifest(manifest.folder, ManifestDoc.model_validate(raw), manifest.files, "auto")
    gpu = runner(model_dir, Sessions([CUDA, CPU]), strict, warmup_batches=[2])
    assert set(gpu.precisions.values()) == {"float32"}


def test_cpu_fallback_is_refused_when_a_gpu_is_required(model_dir):
    with pytest.raises(RuntimeError, match="VDIS_REQUIRE_GPU is set but onnxruntime"):
        runner(model_dir, Sessions([CPU]), require_gpu=True)
    cpu = runner(model_dir, Sessions([CPU]))  # not required: CPU it is, no warm-up
    assert (cpu.on_cuda, cpu.provider, cpu.device) == (False, CPU, "cpu")
    assert set(cpu.precisions.values()) == {"float32"}
    with pytest.raises(RuntimeError, match="does not include CUDAExecutionProvider"):
        choose_providers("CPUExecutionProvider", require_gpu=True)
    assert choose_providers("", require_gpu=True) == [CUDA, CPU]


def test_require_gpu_setting_on_this_cpu_machine(model_dir):
    settings = make_settings(model_dir, REQUIRE_GPU=True, WARMUP_BATCHES="none")
    try:
        built = build_runner(settings)
    except RuntimeError as error:
        assert "VDIS_REQUIRE_GPU" in str(error)
    else:  # only where a GPU really is usable
        assert built.on_cuda


def test_warmup_batches_setting():
    assert warmup_batches("") is None and warmup_batches("none") == []
    assert warmup_batches("1, 16") == [1, 16]
    with pytest.raises(RuntimeError, match="VDIS_WARMUP_BATCHES"):
        warmup_batches("1,x")
