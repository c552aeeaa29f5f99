"""Checks of an exported model folder against the PyTorch model it came from.

- `check_hashes`: the service's own manifest loader (format version, SHA-256 of every file), so
  the exporter and the service agree on what a valid folder is.
- `parity`: every graph and variant run by onnxruntime vs the PyTorch model at several B and T.
- `judge_accuracy`: a trained judge's accuracy on PyTorch vs ONNX reconstructions of Sprites.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.vae import SequentialVAE
from service.engine.manifest import GRAPHS, Manifest, load_manifest, read_manifest

BATCHES = (1, 3, 16)
LENGTHS = (1, 8, 20, 64)
FP32_TOLERANCE = 1e-4  # codes
# Pixels are compared in [0, 1] (uint8 levels / 255). The graphs round x * 255 to uint8 inside,
# so where PyTorch's float32 pixel and onnxruntime's (1e-5 apart) fall on either side of a
# rounding tie (k + 0.5), the two uint8 values are one level apart: one level is the most a
# correct export can differ, and any more is a fault.
FP32_PIXEL_TOLERANCE = 1 / 255
# An exact-colour decoder (ModelConfig.decoder_colours) draws each pixel as a table colour picked
# by an argmax: where two entries' logits tie to within float32 rounding, the runtimes may pick
# different colours, so a pixel is either exact or another colour. This share of the pixels may
# differ by any amount; the others must agree to one level.
EXACT_COLOUR_FLIPS = 1e-4


@dataclass
class ParityRow:
    graph: str
    variant: str  # "float32" or a variant name ("float16")
    max_abs: float  # over every output, every B and T tried
    tolerance: float
    worst: tuple[int, int]  # (B, T) where max_abs was reached
    differing: float | None = None  # uint8 pixel outputs: the share of values that differ
    flips_allowed: float | None = None  # exact colours: this share may differ by any amount

    @property
    def ok(self) -> bool:
        if not np.isfinite(self.max_abs):
            return False
        flips_ok = (self.flips_allowed is not None and self.differing is not None
                    and self.differing <= self.flips_allowed)
        return self.max_abs <= self.tolerance or flips_ok


def check_hashes(model_dir: Path) -> Manifest:
    """Raise RuntimeError unless the manifest is understood and every file matches its hash."""
    return load_manifest(model_dir)


def session(path: Path, threads: int = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def graph_inputs(model: SequentialVAE, graph: str, b: int, t: int,
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    c = model.cfg
    if graph == "encoder":  # (B, T, S, S, C) uint8, as the service's clips are
        shape = (b, t, c.frame_size, c.frame_size, c.channels)
        return {"video": rng.integers(0, 256, shape, np.uint8)}
    appearance = rng.standard_normal((b, c.appearance_dim), dtype=np.float32)
    codes = rng.standard_normal((b, t, c.motion_dim), dtype=np.float32)
    return {"appearance": appearance, ("motion" if graph == "decoder" else "noise"): codes}


@torch.no_grad()
def reference(model: SequentialVAE, graph: str, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The PyTorch model's outputs, in the graph's output order (pixels uint8 (B, T, S, S, C),
    scaled and rounded as export.onnx_export does it)."""
    from export.onnx_export import to_pixels

    x = {k: torch.from_numpy(v) for k, v in inputs.items()}
    if graph == "encoder":
        outputs = model.encode(x["video"].permute(0, 1, 4, 2, 3).float() / 255.0)
    elif graph == "decoder":
        outputs = (to_pixels(model.decode(x["appearance"], x["motion"])),)
    else:
        outputs = (model.sample_motion(x["appearance"], x["noise"]),)
    return [o.numpy() for o in outputs]


def parity(model: SequentialVAE, model_dir: Path, batches=BATCHES, lengths=LENGTHS,
           seed: int = 0, threads: int = 1, progress=None) -> list[ParityRow]:
    """Max abs difference ORT vs PyTorch (float32 model) for every graph and variant.

    PyTorch runs on `threads` threads too: on a busy machine its default thread pool is several
    times slower than one thread.
    """
    model = model.cpu().eval()
    model_dir = Path(model_dir)
    doc = read_manifest(model_dir)
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    rows = []
    try:
        for graph in GRAPHS:
            full = FP32_PIXEL_TOLERANCE if graph == "decoder" else FP32_TOLERANCE
            entries = [("float32", doc.graphs[graph].file, full)]
            entries += [(variant, graphs[graph].file, graphs[graph].tolerance)
                        for variant, graphs in doc.variants.items() if graph in graphs]
            rng = np.random.default_rng(seed)
            cases = []
            for b in batches:
                for t in lengths:
                    inputs = graph_inputs(model, graph, b, t, rng)
                    cases.append(((b, t), inputs, reference(model, graph, inputs)))
            flips = EXACT_COLOUR_FLIPS if graph == "decoder" and model.cfg.decoder_colours else None
            for variant, file, tolerance in entries:
                rows.append(_compare(graph, variant, model_dir / file, tolerance, cases, threads,
                                     flips))
                if progress:
                    progress(rows[-1])
    finally:
        torch.set_num_threads(saved_threads)
    return rows


def _compare(graph: str, variant: str, path: Path, tolerance: float, cases: list,
             threads: int, flips_allowed: float | None = None) -> ParityRow:
    sess = session(path, threads)
    names = [o.name for o in sess.get_outputs()]
    worst, where = 0.0, (0, 0)
    pixels, differing = 0, 0
    for (b, t), inputs, expected in cases:
        got = sess.run(names, inputs)
        for e, g in zip(expected, got, strict=True):
            if e.shape != g.shape or e.dtype != g.dtype:
                raise AssertionError(f"{path.name} at B={b}, T={t}: {g.dtype} {g.shape}, "
                                     f"PyTorch gives {e.dtype} {e.shape}")
            diff = np.abs(e.astype(np.float64) - g)
            if g.dtype == np.uint8:  # levels -> [0, 1]
                pixels, differing = pixels + diff.size, differing + int(np.count_nonzero(diff))
                diff /= 255.0
            diff = float(np.max(diff))
            if not diff <= worst:  # NaN sticks
                worst, where = diff, (b, t)
    return ParityRow(graph, variant, worst, tolerance, where,
                     differing / pixels if pixels else None, flips_allowed)


def format_table(rows: list[ParityRow]) -> str:
    lines = [f"{'graph':<9} {'variant':<8} {'max |diff|':>11} {'tolerance':>10} {'at (B, T)':>10}"
             f"  {'pixels off':>10}  result"]
    for r in rows:
        off = "" if r.differing is None else f"{r.differing:.2e}"
        lines.append(f"{r.graph:<9} {r.variant:<8} {r.max_abs:>11.3g} {r.tolerance:>10.3g} "
                     f"{str(r.worst):>10}  {off:>10}  {'ok' if r.ok else 'FAIL'}")
    lines.append("(pixels in [0, 1]: uint8 levels / 255; `pixels off`: the share of uint8 values "
                 "that differ from PyTorch's)")
    flips = {r.flips_allowed for r in rows if r.flips_allowed is not None}
    if flips:
        lines.append(f"(exact-colour decoder: up to {max(flips):.0e} of its pixels may be another "
                     "of the table's colours, where an argmax is a near tie; the rest within "
                     "one level)")
    return "\n".join(lines)


@torch.no_grad()
def judge_accuracy(model: SequentialVAE, model_dir: Path, judge_path: Path, clips: int = 512,
                   batch: int = 32, threads: int = 1) -> dict[str, dict[str, float]]:
    """Judge accuracy on reconstructions of Sprites test clips: PyTorch vs ONNX (float32).

    Returns {"pytorch": {...}, "onnx": {...}, "agreement": {...}} with motion accuracy, mean
    appearance accuracy over the four attributes and, under "agreement", how often the judge
    gives the same label to both reconstructions.
    """
    from model.data import sprites
    from model.evaluate import load_judge  # lazily: it may not exist yet

    judge = load_judge(judge_path).cpu().eval()
    data = sprites.load("test", progress=False)
    pick = np.sort(np.random.default_rng(0).permutation(len(data))[:clips])
    raw = load_manifest(model_dir).files
    encoder, decoder = session(raw["encoder"], threads), session(raw["decoder"], threads)
    labels = {"pytorch": [], "onnx": []}
    for start in range(0, len(pick), batch):
        idx = pick[start:start + batch]
        clips = np.ascontiguousarray(data.videos[idx])  # (B, T, S, S, 3) uint8
        video = clips.transpose(0, 1, 4, 2, 3).astype(np.float32) / 255  # (B, T, 3, S, S)
        f, _, z, _ = model.encode(torch.from_numpy(video))
        recon = {"pytorch": model.decode(f, z)}
        f_o, _, z_o, _ = encoder.run(None, {"video": clips})
        frames = decoder.run(["video"], {"appearance": f_o, "motion": z_o})[0]  # uint8 BTHWC
        recon["onnx"] = torch.from_numpy(frames.transpose(0, 1, 4, 2, 3).astype(np.float32) / 255)
        for key, clip in recon.items():
            motion, appearance = judge(clip)
            labels[key].append(np.concatenate(
                [motion.argmax(-1)[:, None].numpy()]
                + [a.argmax(-1)[:, None].numpy() for a in appearance], 1))
    truth = np.concatenate([data.motion[pick][:, None], data.appearance[pick]], 1)
    result = {}
    for key, parts in labels.items():
        pred = np.concatenate(parts)
        result[key] = {"motion": float((pred[:, 0] == truth[:, 0]).mean()),
                       "appearance": float((pred[:, 1:] == truth[:, 1:]).mean())}
    a, b = np.concatenate(labels["pytorch"]), np.concatenate(labels["onnx"])
    result["agreement"] = {"motion": float((a[:, 0] == b[:, 0]).mean()),
                           "appearance": float((a[:, 1:] == b[:, 1:]).mean())}
    return result
