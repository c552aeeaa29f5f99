"""How far an upload is from a model's training data: the manifest's `domain_stats` and the score.

Two scores, both ratios to a limit that export measured on the training data (export/domain.py),
so 1.0 is the edge of what the model knows and the verdict is `out` above it; an upload gets
the higher of the two:
- an uploaded clip: the reconstruction error of its first frame (decoded from its own codes;
  the mean squared error, pixels in [0, 1]; `reconstruction_error`) over `limit`. A model
  can only draw what it was trained on, so footage unlike its data comes back far off (on the
  shipped Sprites model: 0.0005 at most on its test clips, 0.028 and up on panned photographs);
- its appearance code: the Mahalanobis distance from the training codes' Gaussian fit, over its
  limit; for codes sent without a video (/decode, /generate with `appearance=`) the only one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Quantiles(_Strict):
    q50: float
    q99: float
    q999: float
    max: float


class FlaggedShare(_Strict):
    """The clips of a held-out set over the limit: what a user of in-domain clips sees."""

    source: str  # e.g. "sprites test split, as MP4 uploads"
    clips: int
    flagged: float  # share of them scored `out`
    lossless_flagged: float | None = None  # the same clips as they are, not compressed


class ErrorScore(_Strict):
    frame: int = 0  # the frame reconstructed
    quantiles: Quantiles  # of the calibration clips' errors
    limit: float  # `factor` x the calibration clips' 99.9% quantile
    factor: float
    test: FlaggedShare | None = None


class CodeScore(_Strict):
    mean: list[float]  # (F,) of the calibration clips' appearance means
    precision: list[list[float]]  # (F, F): the inverse of their (shrunk) covariance
    quantiles: Quantiles  # of the calibration clips' Mahalanobis distances
    limit: float
    factor: float
    test: FlaggedShare | None = None


class DomainStats(_Strict):
    """What export measured on `clips` clips of the training data (`source`)."""

    source: str  # e.g. "sprites training data, 2000 of 9000 clips, each as it is and ..."
    clips: int
    reconstruction: ErrorScore
    appearance: CodeScore
    test: FlaggedShare | None = None  # the verdict (either score over its limit) on a test split


@dataclass(frozen=True)
class Verdict:
    """score: a ratio to the model's limit (1.0: the edge of its training data); basis: what it
    was measured on ("reconstruction" of an upload, or the "appearance code")."""

    score: float
    basis: str

    @property
    def domain(self) -> str:
        return "in" if self.score <= 1.0 else "out"


def reconstruction_error(clips: np.ndarray, decoded: np.ndarray) -> np.ndarray:
    """clips (B, T, S, S, C) uint8 and their frame 0 decoded from their codes (B, 1, S, S, C)
    uint8 -> (B,) mean squared error, pixels in [0, 1]."""
    diff = decoded[:, 0].astype(np.float32) - clips[:, 0].astype(np.float32)
    return (diff * diff).reshape(len(diff), -1).mean(1) / (255.0 * 255.0)


def upload_verdicts(stats: DomainStats | None, errors: np.ndarray | None,
                    appearance: np.ndarray) -> list[Verdict | None]:
    """B uploads' reconstruction errors (B,) and appearance codes (B, F) -> one verdict each
    (None: no stats): the higher of the two scores, and which it was; without the errors
    (VDIS_DOMAIN_CHECK=code) the code's alone."""
    if stats is None:
        return [None] * len(appearance)
    codes = code_verdicts(stats, appearance)
    if errors is None:
        return codes
    limit = stats.reconstruction.limit
    return [max(Verdict(float(e) / limit, "reconstruction"), c, key=lambda v: v.score)
            for e, c in zip(np.asarray(errors, np.float64), codes, strict=True)]


def mahalanobis(codes: np.ndarray, mean, precision) -> np.ndarray:
    """codes (B, F) -> (B,) Mahalanobis distances from a Gaussian fit (mean (F,), precision
    (F, F)), in float64."""
    d = np.asarray(codes, np.float64) - np.asarray(mean, np.float64)
    return np.sqrt(np.maximum(np.einsum("bi,ij,bj->b", d, np.asarray(precision), d), 0))


def code_verdicts(stats: DomainStats | None, appearance: np.ndarray) -> list[Verdict | None]:
    """appearance: (B, F) codes -> one verdict each, from their Mahalanobis distance."""
    if stats is None:
        return [None] * len(appearance)
    a = stats.appearance
    return [Verdict(float(x) / a.limit, "appearance code")
            for x in mahalanobis(appearance, a.mean, a.precision)]
