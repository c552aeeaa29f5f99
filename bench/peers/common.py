"""What the peers share, written as an afternoon's app would: the model's ONNX files opened as
plain onnxruntime sessions (no vdis runner; the graphs take and give uint8 clips (B, T, S, S, 3),
as decoded video is), and the /encode answer's JSON body (the same fields as vdis's).

From vdis they take only service.videoio (decoding and encoding) and the manifest loader; no
torch. The model folder is VDIS_MODEL_DIR, as for vdis, so one variable points all at one model.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service import videoio
from service.engine.manifest import Manifest, load_manifest

REPO = Path(__file__).resolve().parents[2]
GRAPHS = ("encoder", "decoder")
log = logging.getLogger(__name__)


def model_dir() -> Path:
    return Path(os.environ.get("VDIS_MODEL_DIR") or REPO / "models" / "sprites")


def open_sessions(folder: Path, threads: int) -> tuple[Manifest, dict[str, ort.InferenceSession]]:
    """One session per graph on the CPU with `threads` intra-op threads (0: onnxruntime's own
    default). The CPU provider is named: onnxruntime-gpu, the serving venv's build, refuses a
    session with no providers given, and the comparison is between CPU deployments."""
    manifest = load_manifest(folder)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    sessions = {name: ort.InferenceSession(str(manifest.files[name]), options,
                                           providers=["CPUExecutionProvider"])
                for name in GRAPHS}
    for name, session in sessions.items():
        if session.get_providers()[0] != "CPUExecutionProvider":
            raise RuntimeError(f"{name}: onnxruntime runs {session.get_providers()}, not the CPU")
    log.info("%s: %s on %s, %d intra-op threads", folder, GRAPHS, "CPUExecutionProvider", threads)
    return manifest, sessions


def read_clip(data: bytes, manifest: Manifest) -> videoio.Clip:
    """An upload -> (T, S, S, 3) uint8 frames spread over it, centre-cropped (vdis's defaults)."""
    return videoio.read_video(data, manifest.seq_len, size=manifest.frame_size)


def encode(sessions: dict[str, ort.InferenceSession], clips: np.ndarray) -> list[np.ndarray]:
    """clips (B, T, S, S, 3) uint8 -> [appearance mean (B, F), logvar, motion mean (B, T, Z),
    logvar], in the encoder's output order."""
    return sessions["encoder"].run(None, {"video": clips})


def decode(sessions: dict[str, ort.InferenceSession], appearance: np.ndarray,
           motion: np.ndarray) -> np.ndarray:
    """appearance (B, F), motion (B, T, Z) float32 -> video (B, T, S, S, 3) uint8."""
    (video,) = sessions["decoder"].run(None, {"appearance": appearance, "motion": motion})
    return video


def codes_body(manifest: Manifest, codes: list[np.ndarray], clip: videoio.Clip) -> dict:
    """One clip's codes (each without a batch axis) as vdis's /encode JSON answer."""
    f_mean, f_logvar, z_mean, z_logvar = codes
    return {"model": manifest.name,
            "appearance": {"mean": f_mean.tolist(), "logvar": f_logvar.tolist(),
                           "std": np.exp(0.5 * f_logvar).tolist()},
            "motion": {"mean": z_mean.tolist(), "logvar": z_logvar.tolist(),
                       "std": np.exp(0.5 * z_logvar).tolist()},
            "frames": {"count": len(clip.indices), "indices": clip.indices,
                       "times_s": clip.times_s, "source_fps": clip.source_fps,
                       "source_size": clip.source_size, "source_frames": clip.source_frames}}
