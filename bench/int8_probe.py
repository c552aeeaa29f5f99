"""Is dynamic int8 quantisation (onnxruntime.quantization.quantize_dynamic) worth shipping?

    python bench/int8_probe.py [--checkpoint model.safetensors] [--runs 10] [--threads 2]

Exports the encoder and decoder (float32), quantises them and times both on an (8, 8, 3, 64, 64)
batch on the CPU; prints median milliseconds, the speed-up and the max abs difference vs float32.
Without a checkpoint the model is the default ModelConfig, freshly initialised (speed does not
depend on the weights; accuracy does, so judge a trained model before shipping anything).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def median_ms(sess, inputs: dict, runs: int) -> float:
    sess.run(None, inputs)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(None, inputs)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from export.onnx_export import export_model
    from export.verify import session
    from model.checkpoint import load_model
    from model.config import ModelConfig
    from model.vae import SequentialVAE

    if args.checkpoint:
        model, _ = load_model(args.checkpoint)
    else:
        torch.manual_seed(0)
        model = SequentialVAE(ModelConfig()).eval()
    rng = np.random.default_rng(0)
    c = model.cfg
    with torch.no_grad():
        f, _, z, _ = model.encode(torch.rand(8, 8, 3, 64, 64))
    inputs = {"encoder": {"video": rng.random((8, 8, 3, 64, 64), dtype=np.float32)},
              "decoder": {"appearance": f.numpy(), "motion": z.numpy()}}
    print(f"model: {args.checkpoint or 'default ModelConfig, random'} ({c.arch}, width "
          f"{c.width}, hidden {c.hidden}); batch (8, 8, 3, 64, 64); {args.threads} ORT threads; "
          f"median of {args.runs}")
    print(f"{'graph':<8} {'fp32 MB':>8} {'int8 MB':>8} {'fp32 ms':>9} {'int8 ms':>9} "
          f"{'speed-up':>9} {'max |diff|':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        export_model(model, folder, fp16=False)
        for graph in ("encoder", "decoder"):
            fp32 = folder / f"{graph}.onnx"
            int8 = folder / f"{graph}.int8.onnx"
            quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
            a, b = session(fp32, args.threads), session(int8, args.threads)
            ms_a = median_ms(a, inputs[graph], args.runs)
            ms_b = median_ms(b, inputs[graph], args.runs)
            diff = max(float(np.abs(x - y).max())
                       for x, y in zip(a.run(None, inputs[graph]), b.run(None, inputs[graph]),
                                       strict=True))
            print(f"{graph:<8} {fp32.stat().st_size / 1e6:>8.2f} {int8.stat().st_size / 1e6:>8.2f} "
                  f"{ms_a:>9.1f} {ms_b:>9.1f} {ms_a / ms_b:>8.2f}x {diff:>11.3g}", flush=True)


if __name__ == "__main__":
    main()
