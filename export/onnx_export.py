"""Export a trained SequentialVAE as three ONNX graphs (encoder, decoder, motion prior), their
float16 variants and the manifest.json the service reads (see docs/manifest.md).

Why TorchScript and the legacy exporter for the prior: the LSTM prior is autoregressive (z_t
feeds step t+1), and a Python loop traced by either exporter freezes T at the example length.
A scripted loop becomes an ONNX Loop whose trip count is the noise's T, so any length works.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from model.vae import ConditionalPrior, RecurrentPrior, SequentialVAE, lstm_rollout
from service.engine.domain import DomainStats
from service.engine.manifest import FORMAT_VERSION, MAX_FRAMES, ManifestDoc, sha256

OPSET = 18
FP16_TOLERANCE = 0.02  # max abs difference of float16 graphs vs float32, pixels in [0, 1]
DOMAINS = {
    "sprites": ("Sprites: 64x64 pixel-art characters (Liberated Pixel Cup sheets) on a black "
                "background, seen from the front, left or right, in 8-frame clips of walking, "
                "casting a spell or slashing. Any other video comes back as such a sprite."),
    "mmnist": ("Moving MNIST: one or two white handwritten digits moving and bouncing on a black "
               "64x64 canvas. Any other video comes back as moving digits."),
}


def to_levels(x: torch.Tensor) -> torch.Tensor:
    """Values in [0, 1] -> uint8 levels, rounded half to even as numpy's rint, so the graph
    gives what the service gave when it scaled outside the graph."""
    return (x.float() * 255.0).round().clamp(0, 255).to(torch.uint8)


def to_pixels(video: torch.Tensor) -> torch.Tensor:
    """video (B, T, C, S, S) in [0, 1] -> (B, T, S, S, C) uint8 (to_levels)."""
    return to_levels(video).permute(0, 1, 3, 4, 2)


class EncoderGraph(nn.Module):
    """uint8 frames (B, T, S, S, C), as decoded video gives them -> the posterior's codes.

    The scaling to [0, 1] and the channels-first layout happen here, in float32, so a float16
    variant (`dtype`) rounds only inside the model.
    """

    def __init__(self, model: SequentialVAE, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, video: torch.Tensor):
        pixels = video.permute(0, 1, 4, 2, 3).float() / 255.0  # (B, T, C, S, S)
        return tuple(o.float() for o in self.model.encode(pixels.to(self.dtype)))


class DecoderGraph(nn.Module):
    """Codes, float32 -> uint8 frames (B, T, S, S, C); the rounding happens in float32."""

    def __init__(self, model: SequentialVAE, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, appearance: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        return to_pixels(self.model.decode(appearance.to(self.dtype), motion.to(self.dtype)))


class EntryArgmax(nn.Module):
    """argmax over K of ConvTranspose2d(C, K, 4, stride=2, padding=1)(h), computed channels-last:
    h (N, C, H, W) -> (N, 2H, 2W) int64, the same indices but where two logits are within float
    rounding of each other (the sums run in another order).

    Each output pixel of that layer sees a 2x2 window of the input, which window and which taps
    set by its row and column parity (its phase); so the layer is four 2x2 convolutions of the
    input padded by one, here one matrix product of its 2x2 patches, taken channels-last, by a
    (4C, 4K) matrix (the four phases' taps side by side). Why: onnxruntime's argmax across NCHW
    channels is slow, over a contiguous last axis it is not (6 against 1.7 ms for 8 frames of
    48 entries); the shipped Sprites decoder runs in 23.2 ms per 8-frame clip this way, 28.8 as
    PyTorch writes it (1 thread).
    """

    def __init__(self, conv: nn.ConvTranspose2d):
        super().__init__()
        plain = dict(kernel_size=(4, 4), stride=(2, 2), padding=(1, 1), output_padding=(0, 0),
                     dilation=(1, 1), groups=1)
        if any(getattr(conv, name) != value for name, value in plain.items()):
            raise ValueError(f"EntryArgmax rewrites ConvTranspose2d(k=4, s=2, p=1) with no output "
                             f"padding, dilation or groups, not {conv}")
        w = conv.weight.detach()  # (C, K, 4, 4)
        phases = []
        for ry in (0, 1):
            for rx in (0, 1):
                # output row 2m + ry reads input rows m - 1 + ry + dy through tap 3 - ry - 2dy
                taps = [w[:, :, 3 - ry - 2 * dy, 3 - rx - 2 * dx] for dy in (0, 1) for dx in (0, 1)]
                phases.append(torch.cat(taps))  # (4C, K): rows (dy, dx, c)
        self.register_buffer("weight", torch.cat(phases, 1).T.contiguous())  # (4K, 4C)
        bias = conv.bias.detach() if conv.bias is not None else w.new_zeros(w.shape[1])
        self.register_buffer("bias", bias.repeat(4))  # (4K,): (phase, k)
        self.k = w.shape[1]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        _, _, rows, cols = h.shape
        x = F.pad(h, (1, 1, 1, 1)).permute(0, 2, 3, 1)  # (N, H+2, W+2, C)
        patches = torch.cat([x[:, dy:dy + rows + 1, dx:dx + cols + 1]
                             for dy in (0, 1) for dx in (0, 1)], -1)  # (N, H+1, W+1, 4C)
        logits = F.linear(patches.flatten(0, 2), self.weight, self.bias)  # (N*(H+1)*(W+1), 4K)
        entry = logits.unflatten(1, (4, self.k)).argmax(-1)  # (N*(H+1)*(W+1), 4): per phase
        entry = entry.unflatten(0, (-1, rows + 1, cols + 1))  # (N, H+1, W+1, 4)
        # phase (ry, rx) of output pixel (2m + ry, 2n + rx) is patch (m + ry, n + rx)
        by_row = [torch.stack([entry[:, ry:ry + rows, rx:rx + cols, 2 * ry + rx]
                               for rx in (0, 1)], -1) for ry in (0, 1)]  # each (N, H, W, 2)
        return torch.stack(by_row, 2).reshape(-1, 2 * rows, 2 * cols)  # (N, 2H, 2W)


class ExactColourDecoderGraph(nn.Module):
    """An exact-colour decoder's eval render (model.vae.Decoder: each pixel its likeliest
    entry's likeliest colour) -> uint8 frames (B, T, S, S, C), written for onnxruntime: the
    last layer and its argmax as EntryArgmax, and the colours looked up in a uint8 copy of the
    table, channels-last, with no float frames in between."""

    def __init__(self, model: SequentialVAE):
        super().__init__()
        self.decoder = model.decoder
        self.entries = EntryArgmax(self.decoder.out)
        self.register_buffer("table", to_levels(self.decoder.colour_table))  # (C, 3)

    def forward(self, appearance: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        h, per_frame = self.decoder.trunk(appearance, motion)  # (B*T, w, 32, 32)
        entry = self.entries(h)  # (B*T, S, S)
        best = self.decoder.colour_logits(appearance, per_frame).argmax(-1)  # (B*T, K)
        colour = torch.gather(best, 1, entry.flatten(1))  # (B*T, S*S)
        frames = self.table[colour]  # (B*T, S*S, 3)
        return frames.unflatten(1, entry.shape[1:]).unflatten(0, motion.shape[:2])


class RecurrentPriorGraph(nn.Module):
    """DSVAE's LSTM prior rolled out over T steps in float64 (model.vae.lstm_rollout, as the
    PyTorch model samples); float32 in and out. Written for torch.jit.script."""

    def __init__(self, prior: RecurrentPrior):
        super().__init__()
        w_ih, w_hh, bias, w_out, b_out = prior.rollout_weights()
        self.w_ih, self.w_hh, self.bias = nn.Parameter(w_ih), nn.Parameter(w_hh), nn.Parameter(bias)
        self.w_out, self.b_out = nn.Parameter(w_out), nn.Parameter(b_out)

    def forward(self, appearance: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        # the appearance input is part of the graph's signature (the unordered prior uses it)
        z = lstm_rollout(self.w_ih, self.w_hh, self.bias, self.w_out, self.b_out,
                         noise.double() + appearance[:, :1, None].double() * 0.0)
        return z.float()


class ConditionalPriorGraph(nn.Module):
    def __init__(self, prior: ConditionalPrior):
        super().__init__()
        self.prior = prior

    def forward(self, appearance: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.prior.sample(appearance, noise)


class Float16Graph(nn.Module):
    """Runs a graph in float16 with float32 inputs and outputs (casts inside the graph)."""

    def __init__(self, graph: nn.Module):
        super().__init__()
        self.graph = graph.half()

    def forward(self, *inputs: torch.Tensor):
        outputs = self.graph(*[x.half() for x in inputs])
        if isinstance(outputs, torch.Tensor):
            return outputs.float()
        return tuple(o.float() for o in outputs)


def graph_specs(model: SequentialVAE) -> dict[str, dict]:
    """Input and output names, dtypes and shapes of the three graphs ("B", "T" are dynamic)."""
    c = model.cfg
    size = c.frame_size
    pixels = {"name": "video", "dtype": "uint8", "shape": ["B", "T", size, size, c.channels],
              "layout": "BTHWC"}

    def io(name, shape):
        return {"name": name, "dtype": "float32", "shape": shape}

    return {
        "encoder": {
            "inputs": [pixels],
            "outputs": [io("appearance_mean", ["B", c.appearance_dim]),
                        io("appearance_logvar", ["B", c.appearance_dim]),
                        io("motion_mean", ["B", "T", c.motion_dim]),
                        io("motion_logvar", ["B", "T", c.motion_dim])],
        },
        "decoder": {
            "inputs": [io("appearance", ["B", c.appearance_dim]),
                       io("motion", ["B", "T", c.motion_dim])],
            "outputs": [pixels],
        },
        "prior": {
            "inputs": [io("appearance", ["B", c.appearance_dim]),
                       io("noise", ["B", "T", c.motion_dim])],
            "outputs": [io("motion", ["B", "T", c.motion_dim])],
        },
    }


def graph_modules(model: SequentialVAE, half: bool = False) -> dict[str, nn.Module]:
    """The three graphs; `half`: the float16 variants of a model already made half."""
    prior = (RecurrentPriorGraph(model.prior) if isinstance(model.prior, RecurrentPrior)
             else ConditionalPriorGraph(model.prior))
    dtype = torch.float16 if half else torch.float32
    decoder = (ExactColourDecoderGraph(model) if model.decoder.colour_table is not None
               else DecoderGraph(model, dtype))
    return {"encoder": EncoderGraph(model, dtype), "decoder": decoder,
            "prior": Float16Graph(prior) if half else prior}


def example_inputs(model: SequentialVAE, name: str, dtype=torch.float32) -> tuple:
    """Distinct example tensors for each input (one tensor passed twice gave wrong graphs)."""
    c = model.cfg
    b, t = 2, c.seq_len
    if name == "encoder":  # (B, T, S, S, C) uint8
        return (torch.randint(0, 256, (b, t, c.frame_size, c.frame_size, c.channels),
                              dtype=torch.uint8),)
    return (torch.randn(b, c.appearance_dim, dtype=dtype),
            torch.randn(b, t, c.motion_dim, dtype=dtype))


def _export_one(module: nn.Module, spec: dict, inputs: tuple, path: Path, script: bool) -> None:
    dims = {0: "B", 1: "T"}
    dynamic = {}
    for io in spec["inputs"] + spec["outputs"]:
        dynamic[io["name"]] = {i: d for i, d in dims.items() if i < len(io["shape"])
                               and io["shape"][i] == d}
    # A wrapper made here is in training mode, and the exporter restores the mode it found,
    # which would flip the caller's model to training mode (batch-norm statistics!).
    module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's and the legacy exporter's deprecation
        if script:
            module = torch.jit.script(module)
        torch.onnx.export(
            module, inputs, str(path), input_names=[i["name"] for i in spec["inputs"]],
            output_names=[o["name"] for o in spec["outputs"]], dynamic_axes=dynamic,
            opset_version=OPSET, dynamo=False,
        )


def describe_domain(dataset: str) -> str:
    """What a model trained on `dataset` (sprites, mmnist, folder:PATH) knows, in words."""
    if dataset in DOMAINS:
        return DOMAINS[dataset]
    if dataset.startswith("folder:"):
        folder = Path(dataset.split(":", 1)[1])
        return (f"Videos like those in the folder {folder.name!r} it was trained on ({folder}), "
                "each frame centre-cropped to a square and shrunk to 64x64. Any other video "
                "comes back looking like them.")
    return f"clips like its training data ({dataset or 'not recorded'})"


def export_model(model: SequentialVAE, out_dir: Path, meta: dict | None = None,
                 name: str = "vdis", fp16: bool = True, metrics: dict | None = None,
                 progress: Callable[[Path, float], None] | None = None,
                 domain: str | None = None, domain_stats: DomainStats | None = None) -> Path:
    """Write encoder/decoder/prior .onnx (+ .fp16.onnx) and manifest.json into out_dir.

    progress(path, seconds) is called after each graph file is written; `domain` (default: from
    the training data set, describe_domain) says in words what the model expects;
    `domain_stats` (export.domain.domain_stats) let the service score uploads against the
    training data (none: answers carry no domain verdict).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    c = model.cfg
    specs = graph_specs(model)
    graphs, variants = {}, {}
    recurrent = isinstance(model.prior, RecurrentPrior)
    for graph_name, module in graph_modules(model).items():
        path = out_dir / f"{graph_name}.onnx"
        start = time.perf_counter()
        _export_one(module, specs[graph_name], example_inputs(model, graph_name), path,
                    script=recurrent and graph_name == "prior")
        graphs[graph_name] = {"file": path.name, "sha256": sha256(path), **specs[graph_name]}
        if progress:
            progress(path, time.perf_counter() - start)
    if fp16:
        import copy

        half = copy.deepcopy(model).half()
        for graph_name, module in graph_modules(half, half=True).items():
            if graph_name == "encoder" and c.posterior == "full":
                # onnxruntime 1.31's CPU LSTM crashes (SIGSEGV) on float16, so this variant
                # could not be checked for parity: it is not shipped
                continue
            if graph_name == "decoder" and c.decoder_colours:
                # an exact-colour decoder picks each pixel's colour by an argmax: float16
                # rounding flips near ties to another colour (0.015% of a tiny model's pixels,
                # each off by up to 0.9), so its pixels are either exact or wrong; not shipped
                continue
            if graph_name == "prior" and recurrent:
                # the recurrent prior stays float32: its roll-out feeds each step's rounding
                # into the next (measured 0.14 off float32 over 64 steps on a trained model,
                # 7x the tolerance), and it is a few small matrix products per step anyway
                continue
            path = out_dir / f"{graph_name}.fp16.onnx"
            start = time.perf_counter()
            _export_one(module, specs[graph_name],
                        example_inputs(model, graph_name), path, script=False)
            variants[graph_name] = {"file": path.name, "sha256": sha256(path),
                                    "tolerance": FP16_TOLERANCE}
            if progress:
                progress(path, time.perf_counter() - start)
    meta = meta or {}
    manifest = ManifestDoc(
        format_version=FORMAT_VERSION, name=name, architecture=c.arch,
        domain=describe_domain(meta.get("dataset", "")) if domain is None else domain,
        config=c.to_dict(),
        appearance_dim=c.appearance_dim, motion_dim=c.motion_dim, frame_size=c.frame_size,
        channels=c.channels, seq_len=c.seq_len, max_frames=MAX_FRAMES, opset=OPSET,
        graphs=graphs, variants={"float16": variants} if variants else {},
        training={k: meta[k] for k in ("dataset", "commit", "epochs", "steps") if k in meta},
        metrics=metrics or meta.get("metrics", {}), licence=meta.get("licence", ""),
        domain_stats=domain_stats)
    return manifest.write(out_dir)

