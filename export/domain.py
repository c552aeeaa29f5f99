"""The statistics the service scores uploads with (service/engine/domain.py), measured at export.

On up to CALIBRATION_CLIPS clips of the model's training data (the data set its checkpoint
names), spread evenly over it:
- the reconstruction error of frame 0 (`reconstruction_error`, computed as the service does
  with the decoder graph) of each clip as it is and as a user would upload it (`as_uploaded`:
  an H.264 MP4 read back): its quantiles and a limit of ERROR_FACTOR x its 99.9% quantile;
- a Gaussian fit of the appearance means (mean, shrunk covariance) and the quantiles of the
  clips' Mahalanobis distances from it, with a limit of CODE_FACTOR x the 99.9% quantile.
Where the data set has a test split (sprites, mmnist), the share of its clips over each limit
is measured too and written beside it: the rate at which in-domain uploads are flagged.

Why these: measured on the shipped Sprites model (docs/model.md, Domain), frame 0's
reconstruction error is at most 0.0005 on all 2664 test clips and at least 0.028 on panned
photographs, moving squares and Moving MNIST clips; the appearance code's distance separates
photographs too, but with a thinner margin (test clips up to 6.6, photographs from 8.6, Moving
MNIST digits from 5.5), so it is the score only where there is no video (codes sent alone).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from model.vae import SequentialVAE
from service.engine.domain import (
    CodeScore,
    DomainStats,
    ErrorScore,
    FlaggedShare,
    Quantiles,
    mahalanobis,
)

CALIBRATION_CLIPS = 2000
# limit = FACTOR x the 99.9% quantile of the training clips' scores: with 1.0, about 1 in 1000
# uploads like the training data is flagged, chosen before looking at footage unlike it
ERROR_FACTOR = 1.0
CODE_FACTOR = 1.0
# covariance + (SHRINK + F / clips) x its mean variance on the diagonal: well conditioned, and
# near-isotropic when a small folder gives fewer clips than the code has dimensions
SHRINK = 1e-3
TEST_CLIPS = 2664  # the Sprites test split's size; Moving MNIST's evaluation uses as many


def reconstruction_error(model: SequentialVAE, pixels: torch.Tensor, f: torch.Tensor,
                         z: torch.Tensor) -> torch.Tensor:
    """pixels (B, T, C, S, S) in [0, 1], their posterior means f (B, F), z (B, T, Z) -> (B,):
    the mean squared error of frame 0 decoded from (f, z_0) and rounded to uint8 levels, as the
    service computes it from the decoder graph (service.engine.ops)."""
    frame = model.decode(f, z[:, :1])  # (B, 1, C, S, S)
    frame = (frame.float() * 255.0).round().clamp(0, 255) / 255.0  # as the graph's uint8 frames
    return (frame - pixels[:, :1].float()).square().flatten(1).mean(1)


@torch.no_grad()
def clip_statistics(model: SequentialVAE, videos, batch: int = 64, desc: str = ""):
    """videos (N, T, S, S, C) uint8 -> (errors (N,), appearance means (N, F)) as float64;
    a progress bar named `desc` unless it is empty."""
    from tqdm import tqdm

    errors, codes = [], []
    for i in tqdm(range(0, len(videos), batch), desc=desc, unit="batch", disable=not desc,
                  mininterval=2):
        x = torch.from_numpy(np.array(videos[i:i + batch])).permute(0, 1, 4, 2, 3)
        x = x.float() / 255.0  # (B, T, C, S, S)
        f, _, z, _ = model.encode(x)
        errors.append(reconstruction_error(model, x, f, z).double().numpy())
        codes.append(f.double().numpy())
    return np.concatenate(errors), np.concatenate(codes)


def as_uploaded(videos) -> np.ndarray:
    """Each clip (N, T, S, S, C) uint8 as a user would upload it: written as an H.264 MP4 at
    x264's default quality (crf 23, 4:2:0 chroma) and read back by the service's decoder.
    Uploads arrive compressed, and at 64x64 the chroma subsampling alone moves a pixel-art
    clip's frame 0 error 1.3-8x above its lossless value; calibrating on lossless clips flagged
    ordinary MP4 uploads of Sprites clips."""
    from service import videoio

    out = np.empty((len(videos), *videos.shape[1:]), np.uint8)
    for i, clip in enumerate(videos):
        data = videoio.encode_mp4(np.asarray(clip), fps=8.0, crf=23)
        out[i] = videoio.read_video(data, clip.shape[0], size=clip.shape[1]).frames
    return out


def _quantiles(x: np.ndarray) -> Quantiles:
    q = np.quantile(x, [0.5, 0.99, 0.999, 1.0])
    return Quantiles(q50=q[0], q99=q[1], q999=q[2], max=q[3])


def training_clips(dataset: str):
    """(clips (N, T, S, S, C) uint8 of the training data, its description); ValueError when the
    data set cannot be read here."""
    from model.data.registry import load_training_data

    videos = load_training_data(dataset, flow=False).videos
    return videos, f"{dataset} training data"


def test_clips(dataset: str):
    """The held-out test clips of a benchmark data set (sprites, mmnist), else None."""
    if dataset == "sprites":
        from model.data import sprites

        return sprites.load("test", progress=False).videos, "sprites test split"
    if dataset == "mmnist":
        from model.data import moving_mnist

        return moving_mnist.load("test", n=TEST_CLIPS, progress=False).videos, "mmnist test split"
    return None


def domain_stats(model: SequentialVAE, dataset: str, clips: int = CALIBRATION_CLIPS,
                 test: bool = True, log: Callable[[str], None] = print) -> DomainStats:
    """Calibrate on `clips` training clips of `dataset`; with `test`, measure the flagged share
    on its test split where it has one."""
    model = model.cpu().eval()
    videos, source = training_clips(dataset)
    pick = np.unique(np.linspace(0, len(videos) - 1, min(clips, len(videos))).astype(int))
    log(f"domain statistics: {len(pick)} of {len(videos)} clips of the {source}")
    # each clip twice, as it is and as an MP4 upload: users send both kinds (a lossless file,
    # a phone's H.264), and the limits must hold for either
    clips = np.asarray(videos[pick])
    errors, codes = clip_statistics(model, np.concatenate([clips, as_uploaded(clips)]),
                                    desc="  training clips")
    mean = codes.mean(0)
    cov = np.cov(codes, rowvar=False) if len(codes) > 1 else np.eye(codes.shape[1])
    cov = np.atleast_2d(cov)
    shrink = SHRINK + len(cov) / len(codes)
    cov = cov + shrink * max(float(np.trace(cov)) / len(cov), 1e-12) * np.eye(len(cov))
    precision = np.linalg.inv(cov)
    distances = mahalanobis(codes, mean, precision)
    error_q, code_q = _quantiles(errors), _quantiles(distances)
    error_limit, code_limit = ERROR_FACTOR * error_q.q999, CODE_FACTOR * code_q.q999
    error_test = code_test = both_test = None
    held_out = test_clips(dataset) if test else None
    if held_out is not None:
        test_videos, test_source = held_out
        log(f"domain statistics: flagged share on the {len(test_videos)} clips of the "
            f"{test_source}")
        test_errors, test_codes = clip_statistics(model, as_uploaded(test_videos),
                                                  desc="  test clips")
        raw_errors, raw_codes = clip_statistics(model, test_videos, desc="  test clips, lossless")
        error_over = test_errors > error_limit
        code_over = mahalanobis(test_codes, mean, precision) > code_limit
        raw_over = ((raw_errors > error_limit)
                    | (mahalanobis(raw_codes, mean, precision) > code_limit))
        uploaded, n = f"{test_source}, as MP4 uploads", len(test_videos)
        error_test = FlaggedShare(source=uploaded, clips=n, flagged=float(error_over.mean()),
                                  lossless_flagged=float((raw_errors > error_limit).mean()))
        code_test = FlaggedShare(source=uploaded, clips=n, flagged=float(code_over.mean()))
        both_test = FlaggedShare(source=uploaded, clips=n,
                                 flagged=float((error_over | code_over).mean()),
                                 lossless_flagged=float(raw_over.mean()))
    return DomainStats(
        source=f"{source}, {len(pick)} of {len(videos)} clips, each as it is and as an MP4 upload",
        clips=len(pick),
        reconstruction=ErrorScore(quantiles=error_q, limit=error_limit, factor=ERROR_FACTOR,
                                  test=error_test),
        appearance=CodeScore(mean=mean.tolist(), precision=precision.tolist(), quantiles=code_q,
                             limit=code_limit, factor=CODE_FACTOR, test=code_test),
        test=both_test,
    )
