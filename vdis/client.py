"""A typed client for the vdis HTTP API, sync (`Client`) and async (`AsyncClient`), on httpx.

Both clients build requests and read answers with the same functions below; they differ only in
how they send. Codes come back as numpy arrays, videos as bytes in the format asked for (or as a
(N, T, H, W, 3) uint8 array with format="npz"). Every error answer raises `VdisError`, carrying
the problem+json fields (`type`, `title`, `status`, `detail`, `instance`, extras).

Keyword arguments shared by the methods, named as the HTTP API's query parameters:
- how an uploaded video becomes the model's input (encode, swap, generate): `frames` (T; default
  the model's training length), `start` (seconds), `fps` (with `start`: one frame every 1/fps s),
  `fit` ("crop" or "pad"); or all four at once as `clip=ClipOptions(...)`;
- the output (decode, swap, generate): `format` ("mp4", "gif", "png", "npz", "json"), `out_fps`
  (the frame rate of MP4/GIF) and `scale` (upscaling, 1..8);
- `model`: which of the service's models runs the call (`models()` lists them; default: the
  service's default model; decode's default: the model the Codes came from).
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO, Literal

import httpx
import numpy as np

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 120.0

# A video to upload: a path, raw bytes, or an open binary file.
VideoInput = str | os.PathLike | bytes | BinaryIO
Format = Literal["mp4", "gif", "png", "npz", "json"]
Fit = Literal["crop", "pad"]


class VdisError(Exception):
    """An error answer from the service, or no answer at all (`status` 0).

    `type`, `title`, `status`, `detail` and `instance` are the RFC 9457 problem fields; `extra`
    holds any others (e.g. `errors` for invalid parameters); `retry_after_s` comes from the
    Retry-After header of a 503.
    """

    def __init__(self, status: int, title: str, detail: str, type: str = "about:blank",
                 instance: str = "", extra: dict | None = None,
                 retry_after_s: float | None = None):
        self.status, self.title, self.detail, self.type = status, title, detail, type
        self.instance, self.extra, self.retry_after_s = instance, extra or {}, retry_after_s
        super().__init__(f"{status} {title}: {detail}" if status else f"{title}: {detail}")

    @property
    def slug(self) -> str:
        """The last part of `type`, e.g. "too-short"."""
        return self.type.rstrip("/").rsplit("/", 1)[-1]


class ServiceUnreachable(VdisError):
    """No HTTP answer: the service is down, the URL is wrong or the connection broke."""


@dataclass
class ClipOptions:
    """How the service turns an uploaded video into the model's input (see /docs)."""

    frames: int | None = None  # T; default: the model's training length
    start: float | None = None  # seconds
    fps: float | None = None  # with `start`: one frame every 1/fps s
    fit: Fit = "crop"

    def params(self) -> dict[str, Any]:
        return _drop_none({"frames": self.frames, "start": self.start, "fps": self.fps,
                           "fit": self.fit})

    def updated(self, **options: Any) -> ClipOptions:
        """A copy with the options that are not None replaced."""
        return replace(self, **_drop_none(options))


@dataclass
class Codes:
    """What /encode returns.

    appearance: (F,) float32, the posterior mean of f; appearance_logvar (F,)
    motion: (T, Z) float32, the posterior means of z_1..z_T; motion_logvar (T, Z)
    frame_indices: (T,) the index of each frame used in the source video
    """

    model: str
    appearance: np.ndarray
    appearance_logvar: np.ndarray
    motion: np.ndarray
    motion_logvar: np.ndarray
    frame_indices: np.ndarray

    def to_json(self) -> dict:
        """The JSON /encode answers with (the form /decode accepts)."""
        return {
            "model": self.model,
            "appearance": {"mean": self.appearance.tolist(),
                           "logvar": self.appearance_logvar.tolist()},
            "motion": {"mean": self.motion.tolist(), "logvar": self.motion_logvar.tolist()},
            "frame_indices": self.frame_indices.tolist(),
        }

    @classmethod
    def from_npz(cls, source: bytes | str | os.PathLike) -> Codes:
        """Codes from the npz of /encode?format=npz (bytes) or `vdis encode -o codes.npz`."""
        with np.load(io.BytesIO(source) if isinstance(source, bytes) else source) as arrays:
            return cls(model=str(arrays["model"]), appearance=arrays["appearance_mean"],
                       appearance_logvar=arrays["appearance_logvar"],
                       motion=arrays["motion_mean"], motion_logvar=arrays["motion_logvar"],
                       frame_indices=arrays["frame_indices"])

    @classmethod
    def from_json(cls, body: dict) -> Codes:
        """Codes from the JSON of /encode (or of `to_json`, or `vdis encode -o codes.json`)."""
        try:
            appearance, motion = body["appearance"], body["motion"]
            motion_mean = np.asarray(motion["mean"], np.float32)  # (T, Z)
            return cls(
                model=str(body.get("model", "")),
                appearance=np.asarray(appearance["mean"], np.float32),
                appearance_logvar=np.asarray(appearance.get("logvar", []), np.float32),
                motion=motion_mean,
                motion_logvar=np.asarray(motion.get("logvar", []), np.float32),
                frame_indices=np.asarray(body.get("frame_indices",
                                                  body.get("frames", {}).get("indices", []))),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise ValueError("not the codes /encode returns: want {'appearance': {'mean': "
                             "[F numbers]}, 'motion': {'mean': [T lists of Z]}}") from error


@dataclass
class Videos:
    """Video results: `content` in `format`; several results are tiled (`grid` rows x columns).

    `shape` is (N, T, H, W, 3) before tiling and upscaling; `seed` is set by /generate;
    `model` names the model that made them.
    """

    content: bytes
    format: str
    media_type: str
    shape: tuple[int, ...]
    grid: tuple[int, int] | None = None
    seed: int | None = None
    model: str | None = None
    _array: np.ndarray | None = field(default=None, repr=False)

    @property
    def array(self) -> np.ndarray:
        """(N, T, H, W, 3) uint8; needs format="npz" (or "json")."""
        if self._array is None:
            if self.format == "npz":
                self._array = np.load(io.BytesIO(self.content))["videos"]
            elif self.format == "json":
                self._array = np.asarray(json.loads(self.content)["videos"], np.uint8)
            else:
                raise ValueError(f"array needs format='npz' or 'json', not {self.format!r}; "
                                 "decode the bytes with a video library instead")
        return self._array

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.write_bytes(self.content)
        return path


# ---------------------------------------------------------------------------------------------
# Requests and answers, shared by both clients


@dataclass
class _Request:
    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    files: dict[str, tuple[str, bytes, str]] | None = None
    data: dict[str, str] | None = None
    json: Any = None

    def kwargs(self) -> dict[str, Any]:
        return _drop_none({"params": self.params or None, "files": self.files,
                           "data": self.data, "json": self.json})


def _drop_none(values: dict) -> dict:
    return {k: v for k, v in values.items() if v is not None}


def _upload(video: VideoInput, default_name: str) -> tuple[str, bytes, str]:
    """(filename, bytes, content type) for multipart; the service sniffs the real format."""
    if isinstance(video, bytes | bytearray):
        return default_name, bytes(video), "application/octet-stream"
    if isinstance(video, str | os.PathLike):
        path = Path(video)
        return path.name, path.read_bytes(), "application/octet-stream"
    name = Path(getattr(video, "name", default_name)).name
    return name, video.read(), "application/octet-stream"


@dataclass
class _Options:
    """The keyword arguments of a call: clip options (see ClipOptions) and output options."""

    clip: ClipOptions | None = None
    frames: int | None = None
    start: float | None = None
    fps: float | None = None
    fit: Fit | None = None
    format: Format = "mp4"
    out_fps: float = 8.0
    scale: int = 1
    model: str | None = None

    def clip_params(self) -> dict[str, Any]:
        clip = (self.clip or ClipOptions()).updated(frames=self.frames, start=self.start,
                                                    fps=self.fps, fit=self.fit)
        return _drop_none({**clip.params(), "model": self.model})

    def output_params(self) -> dict[str, Any]:
        return {"format": self.format, "out_fps": self.out_fps, "scale": self.scale}


def _model_request(name: str | None) -> _Request:
    return _Request("GET", "/model" if name is None else f"/models/{name}")


def _encode_request(video: VideoInput, options: _Options) -> _Request:
    params = {**options.clip_params(), "format": "npz"}
    return _Request("POST", "/encode", params, files={"video": _upload(video, "video")})


def _decode_request(appearance: np.ndarray | Codes, motion: np.ndarray | None,
                    model: str | None, options: _Options) -> _Request:
    if isinstance(appearance, Codes):
        if motion is not None:
            raise ValueError("give Codes alone, or the arrays appearance (F,) and motion (T, Z)")
        codes = appearance
        appearance, motion, model = codes.appearance, codes.motion, model or codes.model or None
    if motion is None:
        raise ValueError("decode needs the Codes of encode, or appearance (F,) and motion (T, Z)")
    appearance, motion = np.asarray(appearance, np.float32), np.asarray(motion, np.float32)
    if appearance.ndim != 1 or motion.ndim != 2:
        raise ValueError(f"appearance must be (F,) and motion (T, Z); got shapes "
                         f"{appearance.shape} and {motion.shape}")
    body = _drop_none({"model": model, "appearance": appearance.tolist(),
                       "motion": motion.tolist()})
    return _Request("POST", "/decode", options.output_params(), json=body)


def _swap_request(appearance: VideoInput, motion: VideoInput, both: bool,
                  options: _Options) -> _Request:
    params = {**options.clip_params(), **options.output_params(), "both": str(both).lower()}
    files = {"appearance": _upload(appearance, "appearance"),
             "motion": _upload(motion, "motion")}
    return _Request("POST", "/swap", params, files=files)


def _generate_request(video: VideoInput | None, appearance: np.ndarray | None, n: int,
                      sample: Literal["motion", "appearance"], seed: int | None,
                      options: _Options) -> _Request:
    if (video is None) == (appearance is None):
        raise ValueError("give exactly one of `video` or `appearance`")
    params = _drop_none({**options.clip_params(), **options.output_params(),
                         "n": n, "sample": sample, "seed": seed})
    if video is not None:
        return _Request("POST", "/generate", params, files={"video": _upload(video, "video")})
    code = np.asarray(appearance, np.float32)
    return _Request("POST", "/generate", params, data={"appearance": json.dumps(code.tolist())})


def _check(response: httpx.Response) -> httpx.Response:
    if response.is_success:
        return response
    retry = response.headers.get("retry-after")
    retry_after_s = float(retry) if retry and retry.replace(".", "", 1).isdigit() else None
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):  # not problem+json: a proxy's page, say
        raise VdisError(response.status_code, response.reason_phrase or "error",
                        response.text[:500], retry_after_s=retry_after_s)
    known = ("type", "title", "status", "detail", "instance")
    raise VdisError(
        int(body.get("status", response.status_code)), str(body.get("title", "error")),
        str(body.get("detail", "")), str(body.get("type", "about:blank")),
        str(body.get("instance", "")), {k: v for k, v in body.items() if k not in known},
        retry_after_s)


def _codes(response: httpx.Response) -> Codes:
    return Codes.from_npz(_check(response).content)


def _videos(response: httpx.Response, format: Format) -> Videos:
    _check(response)
    headers = response.headers
    grid = headers.get("x-vdis-grid")
    seed = headers.get("x-vdis-seed")
    return Videos(
        content=response.content, format=format,
        media_type=headers.get("content-type", ""),
        shape=tuple(int(s) for s in headers.get("x-vdis-shape", "").split("x") if s),
        grid=tuple(int(s) for s in grid.split("x")) if grid else None,
        seed=int(seed) if seed else None,
        model=headers.get("x-vdis-model"),
    )


def _json(response: httpx.Response) -> dict:
    return _check(response).json()


def _unreachable(url: str, error: httpx.TransportError) -> ServiceUnreachable:
    return ServiceUnreachable(0, "service unreachable",
                              f"no answer from {url} ({type(error).__name__}: {error})")


def _base_url(url: str | None) -> str:
    return (url or os.environ.get("VDIS_URL") or DEFAULT_URL).rstrip("/")


def _key_headers(api_key: str | None) -> dict[str, str]:
    """The API key header for a service started with VDIS_API_KEYS (default: $VDIS_API_KEY)."""
    key = api_key or os.environ.get("VDIS_API_KEY")
    return {"X-API-Key": key} if key else {}


# ---------------------------------------------------------------------------------------------
# The clients


class Client:
    """Synchronous client. `url` defaults to $VDIS_URL, then http://127.0.0.1:8000; `api_key`
    (for a service with VDIS_API_KEYS) to $VDIS_API_KEY.

        with Client() as vdis:
            codes = vdis.encode("walk.mp4", frames=4)  # codes.motion: (T, Z), T = 4
            vdis.decode(codes).save("recon.mp4")
            vdis.swap("a.mp4", "b.mp4", fit="pad", scale=4).save("ab.mp4")
    """

    def __init__(self, url: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 http: httpx.Client | None = None, api_key: str | None = None):
        self.url = _base_url(url)
        self._http = http or httpx.Client(base_url=self.url, timeout=timeout_s)
        self._http.headers.update(_key_headers(api_key))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, request: _Request) -> httpx.Response:
        try:
            return self._http.request(request.method, request.path, **request.kwargs())
        except httpx.TransportError as error:
            raise _unreachable(self.url, error) from error

    def health(self) -> dict:
        return _json(self._send(_Request("GET", "/health")))

    def ready(self) -> dict:
        """The model's provider and the queue; raises VdisError (503) when not ready."""
        return _json(self._send(_Request("GET", "/ready")))

    def models(self) -> list[dict]:
        """The service's models: name, default, domain (what each expects), frame_size,
        seq_len, code sizes, metrics, sample clips."""
        return _json(self._send(_Request("GET", "/models")))["models"]

    def model(self, name: str | None = None) -> dict:
        """A model's manifest (default: the service's default model): name, domain,
        frame_size, seq_len, appearance_dim, ..."""
        return _json(self._send(_model_request(name)))

    def encode(self, video: VideoInput, clip: ClipOptions | None = None, *,
               frames: int | None = None, start: float | None = None, fps: float | None = None,
               fit: Fit | None = None, model: str | None = None) -> Codes:
        """A video's codes: appearance (F,) and motion (T, Z). Clip options: module docstring."""
        options = _Options(clip, frames, start, fps, fit, model=model)
        return _codes(self._send(_encode_request(video, options)))

    def decode(self, appearance: np.ndarray | Codes, motion: np.ndarray | None = None, *,
               model: str | None = None, format: Format = "mp4", out_fps: float = 8.0,
               scale: int = 1) -> Videos:
        """One video from the Codes that encode returns, or from appearance (F,), motion (T, Z)."""
        options = _Options(format=format, out_fps=out_fps, scale=scale)
        return _videos(self._send(_decode_request(appearance, motion, model, options)), format)

    def swap(self, appearance: VideoInput, motion: VideoInput, *, both: bool = False,
             clip: ClipOptions | None = None, frames: int | None = None,
             start: float | None = None, fps: float | None = None, fit: Fit | None = None,
             format: Format = "mp4", out_fps: float = 8.0, scale: int = 1,
             model: str | None = None) -> Videos:
        """The appearance of one video with the motion of the other (both: also the converse)."""
        options = _Options(clip, frames, start, fps, fit, format, out_fps, scale, model)
        return _videos(self._send(_swap_request(appearance, motion, both, options)), format)

    def generate(self, video: VideoInput | None = None, *, appearance: np.ndarray | None = None,
                 n: int = 4, sample: Literal["motion", "appearance"] = "motion",
                 seed: int | None = None, clip: ClipOptions | None = None,
                 frames: int | None = None, start: float | None = None,
                 fps: float | None = None, fit: Fit | None = None, format: Format = "mp4",
                 out_fps: float = 8.0, scale: int = 1, model: str | None = None) -> Videos:
        """n results keeping one factor of `video` (or of the code `appearance`)."""
        options = _Options(clip, frames, start, fps, fit, format, out_fps, scale, model)
        return _videos(self._send(_generate_request(video, appearance, n, sample, seed,
                                                    options)), format)


class AsyncClient:
    """Asynchronous client, the same methods as `Client` as coroutines.

        async with AsyncClient() as vdis:
            codes = await vdis.encode("walk.mp4")
    """

    def __init__(self, url: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 http: httpx.AsyncClient | None = None, api_key: str | None = None):
        self.url = _base_url(url)
        self._http = http or httpx.AsyncClient(base_url=self.url, timeout=timeout_s)
        self._http.headers.update(_key_headers(api_key))

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def _send(self, request: _Request) -> httpx.Response:
        try:
            return await self._http.request(request.method, request.path, **request.kwargs())
        except httpx.TransportError as error:
            raise _unreachable(self.url, error) from error

    async def health(self) -> dict:
        return _json(await self._send(_Request("GET", "/health")))

    async def ready(self) -> dict:
        return _json(await self._send(_Request("GET", "/ready")))

    async def models(self) -> list[dict]:
        return _json(await self._send(_Request("GET", "/models")))["models"]

    async def model(self, name: str | None = None) -> dict:
        return _json(await self._send(_model_request(name)))

    async def encode(self, video: VideoInput, clip: ClipOptions | None = None, *,
                     frames: int | None = None, start: float | None = None,
                     fps: float | None = None, fit: Fit | None = None,
                     model: str | None = None) -> Codes:
        options = _Options(clip, frames, start, fps, fit, model=model)
        return _codes(await self._send(_encode_request(video, options)))

    async def decode(self, appearance: np.ndarray | Codes, motion: np.ndarray | None = None, *,
                     model: str | None = None, format: Format = "mp4", out_fps: float = 8.0,
                     scale: int = 1) -> Videos:
        options = _Options(format=format, out_fps=out_fps, scale=scale)
        return _videos(await self._send(_decode_request(appearance, motion, model, options)),
                       format)

    async def swap(self, appearance: VideoInput, motion: VideoInput, *, both: bool = False,
                   clip: ClipOptions | None = None, frames: int | None = None,
                   start: float | None = None, fps: float | None = None,
                   fit: Fit | None = None, format: Format = "mp4", out_fps: float = 8.0,
                   scale: int = 1, model: str | None = None) -> Videos:
        options = _Options(clip, frames, start, fps, fit, format, out_fps, scale, model)
        return _videos(await self._send(_swap_request(appearance, motion, both, options)),
                       format)

    async def generate(self, video: VideoInput | None = None, *,
                       appearance: np.ndarray | None = None, n: int = 4,
                       sample: Literal["motion", "appearance"] = "motion",
                       seed: int | None = None, clip: ClipOptions | None = None,
                       frames: int | None = None, start: float | None = None,
                       fps: float | None = None, fit: Fit | None = None,
                       format: Format = "mp4", out_fps: float = 8.0, scale: int = 1,
                       model: str | None = None) -> Videos:
        options = _Options(clip, frames, start, fps, fit, format, out_fps, scale, model)
        return _videos(await self._send(_generate_request(video, appearance, n, sample, seed,
                                                          options)), format)
