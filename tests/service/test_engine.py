"""The engine on a real exported model: manifest checks, provider, batching."""

import asyncio
import json
import shutil
import threading
import time

import numpy as np
import pytest

from service.engine import LocalEngine
from service.engine.batcher import MicroBatcher
from service.engine.local import build_runner, resolve_parallelism, usable_cores
from service.engine.manifest import load_manifest
from service.settings import Settings
from tests.service.conftest import make_settings
from tests.service.videos import moving_square


def test_manifest_is_verified(model_dir):
    manifest = load_manifest(model_dir)
    assert set(manifest.files) == {"encoder", "decoder", "prior"}
    assert "file" not in json.dumps(manifest.public())


def test_a_changed_file_or_unknown_version_is_refused(model_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    with (copy / "decoder.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(RuntimeError, match="SHA-256"):
        load_manifest(copy)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    manifest["format_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RuntimeError, match="format_version"):
        load_manifest(copy)
    with pytest.raises(RuntimeError, match="manifest.json is missing"):
        load_manifest(tmp_path / "nowhere")


def test_batched_calls_equal_unbatched_ones(model_dir):
    batches = []

    async def main():
        engine = LocalEngine(make_settings(model_dir, MAX_WAIT_MS=200, MAX_BATCH=4,
                                           MAX_CONCURRENT_RUNS=1),
                             on_batch=lambda model, graph, rows, waits, run_s: batches.append(rows))
        await engine.start()
        try:
            assert engine.status()["provider"] == "CPUExecutionProvider"
            clips = [moving_square(8, 64, 64, seed=s) for s in range(4)]
            together = await asyncio.gather(*[engine.encode(c) for c in clips])
            alone = [await engine.encode(c) for c in clips]
            f = np.concatenate([c.appearance_mean for c in alone])
            z = np.concatenate([c.motion_mean for c in alone])
            decoded = await asyncio.gather(*[engine.decode(f[i:i + 1], z[i:i + 1])
                                             for i in range(4)])
            return together, alone, decoded, await engine.decode(f, z)
        finally:
            await engine.close()

    together, alone, decoded, stacked = asyncio.run(main())
    assert batches[0] == 4 and batches[1:5] == [1, 1, 1, 1]
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_array_equal(a.appearance_mean, b.appearance_mean)
        np.testing.assert_array_equal(a.motion_logvar, b.motion_logvar)
    np.testing.assert_array_equal(np.concatenate(decoded), stacked)


def test_batcher_keeps_shapes_apart_and_reports_failures():
    calls = []

    def run(graph, inputs):
        calls.append((graph, inputs["x"].shape))
        if graph == "broken":
            raise RuntimeError("boom")
        return {"y": inputs["x"] * 2}

    async def main():
        batcher = MicroBatcher(run, max_batch=8, max_wait_ms=50)
        batcher.start()
        try:
            results = await asyncio.gather(
                batcher.submit("g", {"x": np.ones((1, 3))}),
                batcher.submit("g", {"x": np.ones((2, 3))}),
                batcher.submit("g", {"x": np.ones((1, 5))}),
            )
            with pytest.raises(RuntimeError, match="boom"):
                await batcher.submit("broken", {"x": np.ones((1, 3))})
            return results
        finally:
            await batcher.stop()

    results = asyncio.run(main())
    assert sorted(calls[:2]) == [("g", (1, 5)), ("g", (3, 3))]
    assert [r["y"].shape for r in results] == [(1, 3), (2, 3), (1, 5)]


def test_waiting_rows_are_shared_among_the_free_calls():
    calls = []

    def run(graph, inputs):  # long enough for the second call to start before the first ends
        calls.append(len(inputs["x"]))
        time.sleep(0.1)
        return {"y": inputs["x"] + 1}

    async def main(concurrency):
        batcher = MicroBatcher(run, max_batch=8, max_wait_ms=50, concurrency=concurrency)
        batcher.start()
        try:
            results = await asyncio.gather(*[batcher.submit("g", {"x": np.full((1, 2), i)})
                                             for i in range(8)])
        finally:
            await batcher.stop()
        return [int(r["y"][0, 0]) for r in results]

    assert asyncio.run(main(2)) == list(range(1, 9))  # each request gets its own rows back
    assert calls == [4, 4]
    calls.clear()
    assert asyncio.run(main(1)) == list(range(1, 9))
    assert calls == [8]


def test_calls_run_on_as_many_threads_as_calls_allowed_at_once():
    """Not on asyncio's shared pool: each thread that runs a call grows a malloc arena."""
    threads = set()

    def run(graph, inputs):
        threads.add(threading.current_thread().name)
        time.sleep(0.002)
        return {"y": inputs["x"]}

    async def main():
        batcher = MicroBatcher(run, max_batch=2, max_wait_ms=0, concurrency=2)
        batcher.start()
        try:
            for _ in range(10):  # rounds of many requests: asyncio's pool would add threads
                await asyncio.gather(*[batcher.submit("g", {"x": np.ones((1, 2))})
                                       for _ in range(12)])
            await batcher.run_alone("g", {"x": np.ones((1, 2))})  # a worker's retry of one job
        finally:
            await batcher.stop()

    asyncio.run(main())
    assert len(threads) == 2 and all(name.startswith("vdis-model") for name in threads)


def test_parallelism_on_cpu_is_one_call_per_core_unless_set(model_dir):
    def resolved(cores=4, **overrides):
        settings = resolve_parallelism(Settings(MODEL_DIR=model_dir, **overrides), cores)
        return settings.MAX_CONCURRENT_RUNS, settings.INTRA_OP_THREADS

    assert resolved() == (4, 1)  # one call per core side by side, one thread each
    batch = resolve_parallelism(Settings(MODEL_DIR=model_dir), 4).MAX_BATCH
    assert batch == 4 and resolve_parallelism(Settings(MODEL_DIR=model_dir, MAX_BATCH=9)
                                              ).MAX_BATCH == 9
    assert resolved(cores=1) == (1, 1)
    assert resolved(MAX_CONCURRENT_RUNS=4) == (4, 1)  # side by side, one thread each
    assert resolved(MAX_CONCURRENT_RUNS=2) == (2, 2)
    assert resolved(INTRA_OP_THREADS=2) == (2, 2)  # the calls from the threads
    assert resolved(INTRA_OP_THREADS=8) == (1, 8)
    assert resolved(MAX_CONCURRENT_RUNS=3, INTRA_OP_THREADS=3) == (3, 3)  # as set
    # CUDA asked for: one call at a time, onnxruntime's default threads
    assert resolved(PROVIDERS="CUDAExecutionProvider,CPUExecutionProvider") == (1, 0)
    cores = usable_cores()
    status = LocalEngine(Settings(MODEL_DIR=model_dir)).status()
    assert status["queue"]["concurrent_runs"] == cores and status["intra_op_threads"] == 1
    status = LocalEngine(Settings(MODEL_DIR=model_dir, INTRA_OP_THREADS=cores)).status()
    assert status["queue"]["concurrent_runs"] == 1 and status["intra_op_threads"] == cores


def test_the_service_never_imports_torch_or_model():
    import subprocess
    import sys

    code = ("import sys, service.app, service.videoio; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'model')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_intra_op_spinning_is_a_setting_off_by_default(model_dir):
    def spinning(**overrides) -> str:
        runner = build_runner(make_settings(model_dir, **overrides))
        options = runner.sessions["encoder"].get_session_options()
        return options.get_session_config_entry("session.intra_op.allow_spinning")

    assert spinning() == "0"
    assert spinning(INTRA_OP_SPINNING=True) == "1"


def _engine_run(model_dir, body, on_batch=None, **overrides):
    """Run `body(engine)` on a started in-process engine of the test model."""
    async def main():
        engine = LocalEngine(make_settings(model_dir, **overrides), on_batch)
        await engine.start()
        try:
            return await body(engine)
        finally:
            await engine.close()
    return asyncio.run(main())


def test_swap_of_a_clip_with_itself_is_its_reconstruction(model_dir):
    clip = moving_square(8, 64, 64, seed=3)  # (T, S, S, 3) uint8

    async def body(engine):
        codes = await engine.encode(clip)
        recon = await engine.decode(codes.appearance_mean, codes.motion_mean)
        return (recon, (await engine.swap(clip, clip)).videos,
                (await engine.swap(clip, clip, both=True)).videos)

    recon, swapped, both = _engine_run(model_dir, body)
    assert recon.dtype == np.uint8 and recon.shape == (1, 8, 64, 64, 3)
    np.testing.assert_array_equal(swapped, recon)
    np.testing.assert_array_equal(both, np.concatenate([recon, recon]))


def test_swap_both_gives_the_swap_and_its_converse(model_dir):
    a, b = moving_square(8, 64, 64, seed=4), moving_square(8, 64, 64, seed=5)

    async def body(engine):
        ca, cb = await engine.encode(a), await engine.encode(b)
        by_hand = await engine.decode(np.concatenate([ca.appearance_mean, cb.appearance_mean]),
                                      np.concatenate([cb.motion_mean, ca.motion_mean]))
        return (by_hand, (await engine.swap(a, b, both=True)).videos,
                (await engine.swap(a, b)).videos)

    by_hand, both, one = _engine_run(model_dir, body)
    assert both.shape == (2, 8, 64, 64, 3) and both.dtype == np.uint8
    np.testing.assert_array_equal(both, by_hand)
    np.testing.assert_array_equal(one, both[:1])
    assert (both[0] != both[1]).any()


def test_generate_is_seeded_both_ways(model_dir):
    clip = moving_square(8, 64, 64, seed=6)

    async def body(engine):
        f = (await engine.encode(clip)).appearance_mean  # (1, F)
        calls = {
            "motion": engine.generate("motion", 3, 7, 12, clip=clip),
            "motion again": engine.generate("motion", 3, 7, 12, clip=clip),
            "from the code": engine.generate("motion", 3, 7, 12, appearance=f),
            "other seed": engine.generate("motion", 3, 8, 12, clip=clip),
            "appearance": engine.generate("appearance", 2, 7, clip=clip),
            "appearance again": engine.generate("appearance", 2, 7, clip=clip),
        }
        return {name: (await call).videos for name, call in calls.items()}

    out = _engine_run(model_dir, body)
    assert out["motion"].shape == (3, 12, 64, 64, 3) and out["motion"].dtype == np.uint8
    np.testing.assert_array_equal(out["motion"], out["motion again"])
    np.testing.assert_array_equal(out["motion"], out["from the code"])
    assert (out["motion"] != out["other seed"]).any()
    assert out["appearance"].shape == (2, 8, 64, 64, 3)  # the clip's motion, its T
    np.testing.assert_array_equal(out["appearance"], out["appearance again"])
    assert (out["appearance"][0] != out["appearance"][1]).any()


def test_operations_side_by_side_equal_each_alone(model_dir):
    """Concurrent swaps and generates share onnxruntime calls and give what each gives alone."""
    clips = [moving_square(8, 64, 64, seed=s) for s in range(4)]
    batches = {"together": [], "alone": []}

    def ops(engine):
        return ([engine.swap(clips[i], clips[(i + 1) % 4], both=True) for i in range(4)]
                + [engine.generate("motion", 2, i, clip=clips[i]) for i in range(4)])

    async def together(engine):
        return await asyncio.gather(*ops(engine))

    async def alone(engine):
        return [await op for op in ops(engine)]

    def observer(key):
        return lambda model, graph, rows, waits, run_s: batches[key].append((graph, rows))

    # a wide window, so that on a busy machine the operations' later steps still meet
    side_by_side = _engine_run(model_dir, together, observer("together"), MAX_WAIT_MS=1000,
                               MAX_BATCH=16, MAX_CONCURRENT_RUNS=1)
    one_by_one = _engine_run(model_dir, alone, observer("alone"))
    # one by one: 2 or 3 calls per swap (its two clips may share an encoder call), 3 per
    # generate (encoder, prior, decoder); side by side the 8 operations take 4 calls
    assert len(batches["alone"]) >= 4 * 2 + 4 * 3
    merged = batches["together"]
    assert merged[0] == ("encoder", 12), merged  # 4 swaps' 8 clips, 4 generates' 4
    assert sorted(merged[1:]) == [("decoder", 8), ("decoder", 8), ("prior", 8)]
    for a, b in zip(side_by_side, one_by_one, strict=True):
        np.testing.assert_array_equal(a.videos, b.videos)


def test_operations_refuse_what_does_not_fit(model_dir):
    clip = moving_square(8, 64, 64, seed=0)

    async def body(engine):
        errors = []
        for call in (lambda: engine.encode(clip.astype(np.float32)),
                     lambda: engine.swap(clip, clip[:4]),
                     lambda: engine.generate("appearance", 2, 0),
                     lambda: engine.generate("motion", 2, 0, clip=clip,
                                             appearance=np.zeros((1, 32))),
                     lambda: engine.decode(np.zeros((1, 3)), np.zeros((1, 8, 16)))):
            with pytest.raises(ValueError) as error:
                await call()
            errors.append(str(error.value))
        return errors

    errors = _engine_run(model_dir, body)
    assert "uint8" in errors[0] and "same shape" in errors[1]
    assert "sample=appearance takes a clip" in errors[2] and "exactly one" in errors[3]
    assert "appearance must be (B, 32)" in errors[4]
