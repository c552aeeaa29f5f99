"""Every model answer says how far its input is from the model's domain (service/engine/domain.py).

Headers on every answer of /encode, /decode, /swap and /generate:
- `X-Vdis-Domain`: `in`, `out` (any input beyond the model's limit) or `unknown` (the model has
  no domain statistics);
- `X-Vdis-Domain-Score`: the highest score of the inputs (1.0 is the edge of the training data);
- `X-Vdis-Warning`, when out: which input, its score, and what the model expects, in words.
JSON answers carry the same as `domain`. Out of domain the answer still comes (200) unless the
request says `strict=true`: then it is a 422 `out-of-domain` problem naming the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np
from fastapi import Depends, Query, UploadFile

from service.api.deps import upload_label
from service.api.problems import Problem
from service.engine.domain import Verdict, code_verdicts, upload_verdicts
from service.engine.manifest import Manifest


async def strict_option(  # async: no worker thread for it (service.api.deps)
    strict: Annotated[bool, Query(description=(
        "refuse (422 out-of-domain) an input unlike the model's training data, instead of "
        "answering with a warning (X-Vdis-Domain: out)"))] = False,
) -> bool:
    return strict


StrictDep = Annotated[bool, Depends(strict_option)]


@dataclass
class DomainReport:
    """The verdicts on a request's inputs: (form field, label for people, verdict) each."""

    manifest: Manifest
    inputs: list[tuple[str, str, Verdict | None]]

    @property
    def worst(self) -> tuple[str, str, Verdict] | None:
        judged = [item for item in self.inputs if item[2] is not None]
        return max(judged, key=lambda item: item[2].score) if judged else None

    @property
    def verdict(self) -> str:
        worst = self.worst
        return "unknown" if worst is None else worst[2].domain

    def warning(self) -> str | None:
        worst = self.worst
        if worst is None or worst[2].domain == "in":
            return None
        out = [label for _, label, v in self.inputs if v is not None and v.domain == "out"]
        _, label, v = worst
        m = self.manifest
        what = m.doc.domain or f"clips like its training data ({m.doc.training.get('dataset')})"
        return (f"{' and '.join(out)} {'is' if len(out) == 1 else 'are'} unlike what model "
                f"{m.name} was trained on ({label}: {v.basis} score {v.score:.3g}; 1 is the edge "
                f"of its training data), so the answer shows what this model knows, not the "
                f"upload. It expects: {what}")

    def headers(self) -> dict[str, str]:
        worst = self.worst
        headers = {"X-Vdis-Domain": self.verdict}
        if worst is not None:
            headers["X-Vdis-Domain-Score"] = f"{worst[2].score:.4g}"
        warning = self.warning()
        if warning:  # headers are latin-1: the model's domain text is plain ASCII, but be safe
            headers["X-Vdis-Warning"] = warning.encode("ascii", "replace").decode()
        return headers

    def body(self) -> dict:
        """The `domain` member of a JSON answer."""
        worst = self.worst
        return {"verdict": self.verdict,
                "score": None if worst is None else round(worst[2].score, 6),
                "basis": None if worst is None else worst[2].basis,
                "inputs": {field: None if v is None else {"verdict": v.domain,
                                                          "score": round(v.score, 6),
                                                          "basis": v.basis}
                           for field, _, v in self.inputs},
                "warning": self.warning()}

    def enforce(self, strict: bool) -> None:
        """With `strict`, a 422 problem naming the worst input when it is out of domain."""
        worst = self.worst
        if strict and worst is not None and worst[2].domain == "out":
            field, _, v = worst
            raise Problem("out-of-domain", f"{self.warning()}. Without strict=true the answer "
                          "comes with this warning instead", field=field,
                          score=round(v.score, 6), basis=v.basis)


def judge_uploads(manifest: Manifest, uploads: list[tuple[str, UploadFile]],
                  errors: np.ndarray | None, appearance: np.ndarray | None) -> DomainReport:
    """uploads[i]: (form field, file) of upload i; errors, appearance: their reconstruction
    errors (B,) (None with VDIS_DOMAIN_CHECK=code) and appearance codes (B, F)
    (service.engine.ops); no verdict when the model has no domain statistics."""
    verdicts = ([None] * len(uploads) if appearance is None else
                upload_verdicts(manifest.doc.domain_stats, errors, appearance))
    return DomainReport(manifest, [(field, upload_label(field, upload), v)
                                   for (field, upload), v in zip(uploads, verdicts, strict=True)])


def judge_codes(manifest: Manifest, field: str, appearance: np.ndarray) -> DomainReport:
    """An appearance code (1, F) sent without a video (/decode, /generate with `appearance`)."""
    verdicts = code_verdicts(manifest.doc.domain_stats, np.asarray(appearance, np.float64))
    return DomainReport(manifest, [(field, f"the `{field}` code", verdicts[0])])
