"""The sequential VAE graph (modules only, no training code).

Generative model (DSVAE, Li & Mandt 2018):
    p(x_1:T, z_1:T, f) = p(f) prod_t p(z_t | z_<t) p(x_t | z_t, f),   p(f) = N(0, I)
with an LSTM prior for z_t. The "unordered" architecture (Helminger et al. 2018) replaces the
recurrent prior by p(z_t | f) and pools f from a few frames taken in any order.

Where appearance and motion can go is set by what each encoder sees, not left to the losses:
- f (appearance) is pooled over patches of every frame, by horizontal band (head to feet): it
  knows which colours a character has and roughly at which height, not where across, nor the
  frame order. Pose, facing direction and action are shapes, so f cannot carry them. (A plain
  DSVAE whose f reads whole frames puts the motion into f; see docs/model.md.)
- z_t (motion) sees the frame as a colour-free silhouette (`motion_view="silhouette"`), so it
  cannot carry skin, clothes or hair colours.
- The decoder paints from a palette that only f sets (`decoder_palette`): where each colour
  goes is drawn from z_t and f, what each colour is comes from f alone.

Shapes: video (B, T, 3, 64, 64) float in [0, 1]; f (B, F); z (B, T, Z).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from model.config import ModelConfig

FLOW_CLASSES = 10  # 3x3 grid cell of the strongest flow, or "still"


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2))


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)
    )


def silhouette(frames: torch.Tensor) -> torch.Tensor:
    """A colour-free view of frames (N, C, H, W) in [0, 1]: (N, 1, H, W) soft foreground map.

    The brightest channel, saturated (anything above 0.04 counts as figure, the background of
    Sprites is exactly 0), then averaged over 2x2 blocks so outlines are soft. What is left is
    where the figure is: pose, facing direction and action, but no colours, so the motion
    codes cannot tell a character's skin, clothes or hair colour.
    """
    mask = (frames.amax(1, keepdim=True) * 25.0).clamp(0.0, 1.0)
    return F.avg_pool2d(mask, 2)  # (N, 1, H/2, W/2): pose needs no finer outline


class FrameEncoder(nn.Module):
    """Per-frame conv encoder: (N, C, 64, 64) -> (N, hidden); C = 1 for the silhouette view."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        w = cfg.width
        if cfg.motion_view == "silhouette":  # (1, 32, 32) in: three layers down to 4x4
            self.view = silhouette
            self.convs = nn.Sequential(_down(1, w), _down(w, 2 * w), _down(2 * w, 4 * w))
            out = 4 * w
        else:
            self.view = None
            self.convs = nn.Sequential(
                _down(cfg.channels, w), _down(w, 2 * w), _down(2 * w, 4 * w), _down(4 * w, 8 * w)
            )
            out = 8 * w
        self.fc = nn.Sequential(nn.Linear(out * 4 * 4, cfg.hidden), nn.LeakyReLU(0.2))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if self.view is not None:
            frames = self.view(frames)
        return self.fc(self.convs(frames).flatten(1))


class AppearanceEncoder(nn.Module):
    """Bag-of-patches encoder: video (B, T, 3, 64, 64) -> f mean, log-variance (B, F).

    Patch features are pooled (mean and max) over frames and columns within each of
    `appearance_bands` horizontal bands of the frame, so f knows roughly at which height a
    colour is (hair on top, trousers at the bottom: two parts may share a colour) but not
    where it is across, nor in which frame.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        a, k = cfg.appearance_width, cfg.appearance_patch
        self.patches = nn.Sequential(
            nn.Conv2d(cfg.channels, a, k, k), nn.LeakyReLU(0.2),
            nn.Conv2d(a, a, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(a, a, 1),
        )
        self.bands = cfg.appearance_bands
        if (cfg.frame_size // k) % self.bands:
            raise ValueError("appearance_bands must divide the rows of patches")
        self.head = nn.Sequential(
            nn.Linear(2 * a * self.bands, cfg.hidden), nn.LeakyReLU(0.2),
            nn.Linear(cfg.hidden, 2 * cfg.appearance_dim),
        )

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = video.shape[0]
        feats = self.patches(video.flatten(0, 1))  # (B*T, A, R, R), R = 64/k
        a, r = feats.shape[1], feats.shape[2]
        # (B, T, A, bands, R/bands, R) -> (B, A, bands, T * R/bands * R)
        feats = feats.reshape(b, -1, a, self.bands, r // self.bands, r)
        feats = feats.permute(0, 2, 3, 1, 4, 5).flatten(3)
        pooled = torch.cat([feats.mean(-1), feats.amax(-1)], -1).flatten(1)  # (B, 2A*bands)
        mean, logvar = self.head(pooled).chunk(2, -1)
        return mean, logvar


class ConvAppearanceEncoder(nn.Module):
    """Shape encoder: video (B, T, 3, 64, 64) -> f mean, log-variance (B, F).

    For appearances that are shapes rather than colours (Moving MNIST's digits: grey strokes on
    black, where a bag of 4x4 patches cannot tell a 3 from an 8). Four convolutions whose
    receptive field is 33x33 pixels (a 28x28 digit fits in it), then mean and max pooled over
    every position and every frame: f knows which shapes a clip holds, not where they are nor
    in which frame, so it cannot carry the trajectories.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        a = cfg.appearance_width
        act = nn.LeakyReLU(0.2)
        self.convs = nn.Sequential(
            nn.Conv2d(cfg.channels, a // 2, 5, 2, 2), act,  # (a/2, 32, 32), field 5
            nn.Conv2d(a // 2, a, 3, 2, 1), act,  # (a, 16, 16), field 9
            nn.Conv2d(a, 2 * a, 3, 2, 1), act,  # (2a, 8, 8), field 17
            nn.Conv2d(2 * a, 2 * a, 3, 1, 1),  # (2a, 8, 8), field 33
        )
        self.head = nn.Sequential(
            nn.Linear(4 * a, cfg.hidden), nn.LeakyReLU(0.2),
            nn.Linear(cfg.hidden, 2 * cfg.appearance_dim),
        )

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = video.shape[0]
        feats = self.convs(video.flatten(0, 1))  # (B*T, 2a, 8, 8)
        c = feats.shape[1]
        # (B*T, 2a, 8, 8) -> (B, T, 2a, 64) -> (B, 2a, T*64): every position of every frame
        feats = feats.reshape(b, -1, c, feats.shape[2] * feats.shape[3])
        feats = feats.permute(0, 2, 1, 3).flatten(2)
        pooled = torch.cat([feats.mean(-1), feats.amax(-1)], -1)  # (B, 4a)
        mean, logvar = self.head(pooled).chunk(2, -1)
        return mean, logvar


class MotionPosterior(nn.Module):
    """q(z_t | x_t) (factorised) or q(z_1:T | x_1:T, f) (full): -> mean, log-var (B, T, Z)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.full = cfg.posterior == "full"
        h = cfg.hidden
        if self.full:
            # Linear([h_t, f]) as two projections added by broadcasting: no concat of a
            # repeated f, whose traced shape would freeze B or T in the exported graph
            self.from_frames = nn.Linear(h, h)
            self.from_appearance = nn.Linear(cfg.appearance_dim, h, bias=False)
            self.birnn = nn.LSTM(h, h // 2, batch_first=True, bidirectional=True)
            self.rnn = nn.GRU(h, h, batch_first=True)
        else:
            self.mlp = nn.Sequential(nn.Linear(h, h), nn.LeakyReLU(0.2))
        self.out = nn.Linear(h, 2 * cfg.motion_dim)

    def forward(self, feats: torch.Tensor, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.full:
            joint = self.from_frames(feats) + self.from_appearance(f).unsqueeze(1)  # (B, T, H)
            # initial states derived from the input: the exporter would bake a default
            # zero state's batch size into the graph
            zero = joint[:, 0] * 0.0  # (B, H); zeros_like() was traced as a constant
            half = zero[:, : zero.shape[1] // 2]
            state = torch.stack([half, half]).contiguous()  # (2 directions, B, H/2)
            hidden, _ = self.birnn(joint, (state, state))
            hidden, _ = self.rnn(hidden, zero.unsqueeze(0).contiguous())
        else:
            hidden = self.mlp(feats)
        mean, logvar = self.out(hidden).chunk(2, -1)
        return mean, logvar


def softmax_over_channels(x: torch.Tensor) -> torch.Tensor:
    """softmax(x, dim=1) spelled out (max, exp, sum, divide).

    The same values as `x.softmax(1)`, but onnxruntime's CPU Softmax on a non-last axis of
    (N, 16, 64, 64) took 13 ms per 8-frame clip (41% of the decoder) and these four
    element-wise ops 2 ms; moving the axis last and back costs more than they do.
    """
    e = (x - x.amax(1, keepdim=True)).exp()
    return e / e.sum(1, keepdim=True)


def colour_key(rgb):
    """(..., 3) integer levels -> (...,) 24-bit values, the order of `Decoder.colour_table`
    (numpy arrays or torch tensors)."""
    return rgb[..., 0] * 65536 + rgb[..., 1] * 256 + rgb[..., 2]


class Decoder(nn.Module):
    """p(x_t | z_t, f): f (B, F), z (B, T, Z) -> video (B, T, 3, 64, 64) in [0, 1].

    f enters twice: with z_t in the first layer, and as a per-channel scale and shift (FiLM)
    after every normalised upsampling layer. Colours are channel statistics, so FiLM gives f a
    direct hand on them, while z_t's layout sets where things are.

    With `decoder_palette` K > 0 the last layer gives K logits per pixel instead of RGB, and
    each pixel is the softmax-weighted mix of K colours computed from f alone: the network
    draws which part goes where, the appearance code says what colour each part has. Pixel
    art has few colours, so this is sharp where a plain RGB output is a blurred average.

    With `decoder_colours` C > 0 as well, an entry is not an RGB colour but a distribution over
    the C exact colours of the training data (`colour_table`), again from f alone: training
    scores each pixel's colour as a class (`exact_colour_nll`), and in eval mode every pixel is
    one of the table's colours (its likeliest entry's likeliest colour).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        w = cfg.width
        self.w = w
        self.fc = nn.Sequential(
            nn.Linear(cfg.appearance_dim + cfg.motion_dim, cfg.hidden), nn.LeakyReLU(0.2),
            nn.Linear(cfg.hidden, 8 * w * 4 * 4), nn.LeakyReLU(0.2),
        )
        self.film = self.palette = None
        self.colour_table: torch.Tensor | None = None  # a buffer with exact colours (below)
        if not cfg.decoder_film:  # the layout of checkpoints from before FiLM (no palette)
            self.convs = nn.Sequential(
                _up(8 * w, 4 * w), _up(4 * w, 2 * w), _up(2 * w, w),
                nn.ConvTranspose2d(w, cfg.channels, 4, 2, 1), nn.Sigmoid(),
            )
            return
        self.ups = nn.ModuleList([
            nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout))
            for cin, cout in ((8 * w, 4 * w), (4 * w, 2 * w), (2 * w, w))
        ])
        self.film = nn.Linear(cfg.appearance_dim, 2 * (4 * w + 2 * w + w))
        nn.init.zeros_(self.film.weight)  # starts as the plain decoder
        nn.init.zeros_(self.film.bias)
        self.act = nn.LeakyReLU(0.2)
        if cfg.decoder_palette and cfg.decoder_colours:
            k, c = cfg.decoder_palette, cfg.decoder_colours
            self.out = nn.ConvTranspose2d(w, k, 4, 2, 1)  # logits of the K entries per pixel
            self.palette = nn.Sequential(  # per entry, logits over the C exact colours
                nn.Linear(cfg.appearance_dim, cfg.hidden), nn.LeakyReLU(0.2),
                nn.Linear(cfg.hidden, k * c),
            )
            # the training data's colours in [0, 1], sorted by their 24-bit value (colour_index)
            del self.colour_table
            self.register_buffer("colour_table", torch.zeros(c, cfg.channels))
        elif cfg.decoder_palette:
            k = cfg.decoder_palette
            self.out = nn.ConvTranspose2d(w, k, 4, 2, 1)  # logits of the K colours per pixel
            self.palette = nn.Sequential(
                nn.Linear(cfg.appearance_dim, cfg.hidden), nn.LeakyReLU(0.2),
                nn.Linear(cfg.hidden, k * cfg.channels), nn.Sigmoid(),
            )
        else:
            self.out = nn.Sequential(nn.ConvTranspose2d(w, cfg.channels, 4, 2, 1), nn.Sigmoid())

    def colour_index(self, video: torch.Tensor) -> torch.Tensor:
        """Each pixel's entry in `colour_table`: video (..., 3, H, W) in [0, 1] -> (..., H, W).

        A colour that is not in the table gets a neighbouring entry's index; the table holds
        every colour of the training data, so training targets are always found.
        """
        table = colour_key((self.colour_table * 255).round().long())
        pixels = colour_key((video.movedim(-3, -1) * 255).round().long())
        return torch.searchsorted(table, pixels.contiguous()).clamp_max(len(table) - 1)

    def exact_colour_nll(self, f: torch.Tensor, z: torch.Tensor,
                         target: torch.Tensor) -> torch.Tensor:
        """-log p(x_t | z_t, f) per pixel, (B, T, H, W) nats, for the exact-colour decoder.

        A pixel picks entry k with probability p_k (the per-pixel logits) and entry k draws
        colour c with probability q_k(c) (from f alone): p(colour) = sum_k p_k q_k(colour).
        target (B, T, 3, H, W) in [0, 1], frames of the clip in z's order.
        """
        logits, per_frame = self._entry_logits(f, z)  # (B*T, K, H, W)
        log_p = F.log_softmax(logits.float(), 1).flatten(2)  # (B*T, K, H*W)
        log_q = F.log_softmax(self.colour_logits(f, per_frame).float(), -1)  # (B*T, K, C)
        index = self.colour_index(target.flatten(0, 1)).flatten(1)  # (B*T, H*W)
        picked = torch.gather(log_q, 2, index.unsqueeze(1).expand(-1, log_q.shape[1], -1))
        nll = -torch.logsumexp(log_p + picked, 1)  # (B*T, H*W)
        return nll.unflatten(1, logits.shape[2:]).unflatten(0, z.shape[:2])

    def colour_logits(self, f: torch.Tensor, per_frame: torch.Tensor) -> torch.Tensor:
        """(B*T, K, C): each entry's logits over the exact colours, from f alone."""
        c = self.colour_table.shape[0]
        return (self.palette(f).unsqueeze(1) * per_frame).flatten(0, 1).unflatten(1, (-1, c))

    def _first_layer(self, f: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[f, z_t] through the FC layers: (B*T, 8w, 4, 4), and the (B, T, 1) broadcast of
        per-clip tensors over frames."""
        per_frame = torch.ones_like(z[..., :1])  # (B, T, 1): broadcasts f over frames
        f_seq = f.unsqueeze(1) * per_frame  # (B, T, F)
        fz = torch.cat([f_seq, z], -1).flatten(0, 1)  # (B*T, F+Z)
        return self.fc(fz).unflatten(1, (8 * self.w, 4, 4)), per_frame

    def _entry_logits(self, f: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A FiLM decoder's (B*T, K, 64, 64) output logits, and the (B, T, 1) broadcast of
        per-clip tensors over frames."""
        h, per_frame = self.trunk(f, z)
        return self.out(h), per_frame

    def trunk(self, f: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A FiLM decoder up to its last layer: (B*T, w, 32, 32) features, and the (B, T, 1)
        broadcast of per-clip tensors over frames."""
        h, per_frame = self._first_layer(f, z)
        film = (self.film(f).unsqueeze(1) * per_frame).flatten(0, 1)  # (B*T, 2 * channels)
        start = 0
        for up in self.ups:
            h = up(h)
            c = h.shape[1]
            scale = film[:, start:start + c, None, None]
            shift = film[:, start + c:start + 2 * c, None, None]
            h = self.act(h * (1 + scale) + shift)
            start += 2 * c
        return h, per_frame

    def _exact_colour_frames(self, f: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) frames of the exact-colour decoder.

        In eval mode each pixel shows the most likely colour of its most likely entry, one of
        the table's exact colours; in training, the expected colour (differentiable).
        """
        logits, per_frame = self._entry_logits(f, z)  # (B*T, K, H, W)
        colour_logits = self.colour_logits(f, per_frame)  # (B*T, K, C)
        if self.training:
            entry_colours = colour_logits.softmax(-1) @ self.colour_table  # (B*T, K, 3)
            weights = softmax_over_channels(logits).flatten(2)  # (B*T, K, H*W)
            frames = torch.matmul(entry_colours.transpose(1, 2), weights)  # (B*T, 3, H*W)
        else:
            entry = logits.argmax(1).flatten(1)  # (B*T, H*W): each pixel's entry
            colour = torch.gather(colour_logits.argmax(-1), 1, entry)  # (B*T, H*W): its colour
            frames = self.colour_table[colour].transpose(1, 2)  # (B*T, 3, H*W)
        return frames.unflatten(2, logits.shape[2:]).unflatten(0, z.shape[:2])

    def forward(self, f: torch.Tensor, z: torch.Tensor,
                with_spread: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The frames; with `with_spread`, also the palette's colour variance per pixel.

        The spread, (B, T, H, W), is sum_k p_k |c_k - mix|^2: how far the entries a pixel mixes
        lie from the colour it shows. It is 0 where a pixel picks one entry, and the squared
        error plus the spread is the expected error of a pixel that picks entry k with
        probability p_k: holding it down makes the decoder paint exact palette colours
        instead of blends that land near them (the `palette_spread` loss term).
        """
        if self.colour_table is not None:
            frames = self._exact_colour_frames(f, z)
            if with_spread:  # exact colours have no blend to hold down
                return frames, frames.new_zeros(frames.shape[:2] + frames.shape[3:])
            return frames
        if self.film is None:
            return self.convs(self._first_layer(f, z)[0]).unflatten(0, z.shape[:2])
        # (B*T, 3, 64, 64), or (B*T, K, 64, 64) logits with a palette
        frames, per_frame = self._entry_logits(f, z)
        if self.palette is not None:
            # the palette depends on f alone: once per clip, then broadcast over its frames
            palette = (self.palette(f).unsqueeze(1) * per_frame).flatten(0, 1)  # (B*T, K*3)
            colours = palette.unflatten(1, (frames.shape[1], -1))  # (B*T, K, 3)
            weights = softmax_over_channels(frames).flatten(2)  # (B*T, K, 64*64)
            mixed = torch.matmul(colours.transpose(1, 2), weights)  # (B*T, 3, 64*64)
            if with_spread:
                power = torch.matmul((colours**2).sum(-1, keepdim=True).transpose(1, 2),
                                     weights)  # (B*T, 1, 64*64): E|c|^2
                spread = (power - (mixed**2).sum(1, keepdim=True)).clamp_min(0)
                spread = spread.unflatten(2, frames.shape[2:])[:, 0].unflatten(0, z.shape[:2])
            frames = mixed.unflatten(2, frames.shape[2:])
        frames = frames.unflatten(0, z.shape[:2])
        if with_spread:
            return frames, (spread if self.palette is not None else frames.new_zeros(
                frames.shape[:2] + frames.shape[3:]))
        return frames


def widen_palette(model: SequentialVAE, k: int, noise: float = 1e-3, seed: int = 0) -> None:
    """Give a trained palette decoder k colours instead of K, drawing what it drew.

    New entry m starts as a copy of entry m mod K (its logit filter and its colour): copies of
    one colour share that colour's softmax weight between them, so every pixel keeps its mix
    (exactly with noise=0). A little noise (std `noise`) on the copies' colours breaks the
    tie (their gradients then differ), so training can pull them apart into tones of their own.
    Why: Sprites clips have ~38 distinct colours; 16 entries cover 80% of a character's pixels,
    32 cover 98.6% and 48 cover 99.9% (measured on the test split), and the rest must be mixed.
    """
    dec, old = model.decoder, model.cfg.decoder_palette
    if not old or k < old:
        raise ValueError(f"can only widen a palette decoder (has {old} colours, asked {k})")
    if k == old:
        return
    gen = torch.Generator().manual_seed(seed)
    src = torch.arange(k) % old  # the entry each new one copies
    copy = torch.arange(k) >= old  # the copies get the noise; the first K stay as they were
    c = model.cfg.channels
    with torch.no_grad():
        conv = nn.ConvTranspose2d(dec.out.in_channels, k, 4, 2, 1)  # weight (in, K, 4, 4)
        conv.weight.copy_(dec.out.weight[:, src])
        # n copies of a colour would get n times its weight: each copy's logit is lowered by
        # log n (it matters where K does not divide k and colours have unequal numbers of copies)
        copies = torch.bincount(src, minlength=old).float()
        conv.bias.copy_(dec.out.bias[src] - copies[src].log())
        last = dec.palette[-2]  # Linear(hidden, K * channels), entry-major
        lin = nn.Linear(last.in_features, k * c)
        rows = (src[:, None] * c + torch.arange(c)).flatten()
        weight = last.weight[rows]
        lin.weight.copy_(weight + noise * torch.randn(weight.shape, generator=gen)
                         * copy.repeat_interleave(c)[:, None])
        lin.bias.copy_(last.bias[rows])
    dec.out = conv
    dec.palette[-2] = lin
    model.cfg.decoder_palette = k


class RecurrentPrior(nn.Module):
    """DSVAE's p(z_t | z_<t): an LSTM over the previous codes, started from zeros."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.lstm = nn.LSTM(cfg.motion_dim, cfg.hidden, batch_first=True)
        self.out = nn.Linear(cfg.hidden, 2 * cfg.motion_dim)

    def forward(self, z: torch.Tensor, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prior parameters for every t given the codes z (B, T, Z) before it (teacher forcing)."""
        shifted = torch.cat([torch.zeros_like(z[:, :1]), z[:, :-1]], 1)
        hidden, _ = self.lstm(shifted)
        mean, logvar = self.out(hidden).chunk(2, -1)
        return mean, logvar

    def rollout_weights(self) -> tuple[torch.Tensor, ...]:
        """The LSTM cell and output layer as float64 tensors, for `lstm_rollout`."""
        lstm = self.lstm
        return tuple(w.detach().double() for w in (
            lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0 + lstm.bias_hh_l0,
            self.out.weight, self.out.bias))

    def sample(self, f: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Roll the prior out: noise (B, T, Z) ~ N(0, I) -> z (B, T, Z), computed in float64.

        Each step feeds on the last, so float32 rounding compounds: on a trained prior the
        float32 roll-out was measured 7.6e-4 off the float64 one after 20 steps, and two
        float32 implementations (PyTorch's LSTM, the ONNX graph) as far apart. In float64 the
        exported graph and this agree to the final float32 rounding.
        """
        return lstm_rollout(*self.rollout_weights(), noise.double()).to(noise.dtype)


def lstm_rollout(w_ih: torch.Tensor, w_hh: torch.Tensor, bias: torch.Tensor,
                 w_out: torch.Tensor, b_out: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The recurrent prior's roll-out from zero states: z_t = mean_t + std_t * noise_t.

    The LSTM cell is spelled out (PyTorch's gate order i, f, g, o) so that torch.jit.script
    turns the loop into an ONNX Loop with any T; every tensor has noise's dtype.
    """
    b = noise.size(0)
    # "+ 0 * input" ties the zero states to the input so their batch size stays dynamic
    h = torch.zeros(b, w_hh.size(1), dtype=noise.dtype) + noise[:, 0, :1] * 0.0
    c = torch.zeros_like(h)
    z = noise[:, 0] * 0.0
    codes = []
    for t in range(noise.size(1)):
        gates = z @ w_ih.t() + h @ w_hh.t() + bias
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        mean, logvar = (h @ w_out.t() + b_out).chunk(2, 1)
        z = mean + torch.exp(0.5 * logvar) * noise[:, t]
        codes.append(z)
    return torch.stack(codes, 1)


class ConditionalPrior(nn.Module):
    """Helminger et al.'s p(z_t | f): the same Gaussian for every frame, no recurrence."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(cfg.appearance_dim, cfg.hidden), nn.LeakyReLU(0.2),
            nn.Linear(cfg.hidden, 2 * cfg.motion_dim),
        )

    def forward(self, z: torch.Tensor, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = (self.mlp(f).unsqueeze(1) * torch.ones_like(z[..., :1])).chunk(2, -1)
        return mean, logvar

    def sample(self, f: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        mean, logvar = self.mlp(f).unsqueeze(1).chunk(2, -1)  # (B, 1, Z)
        return mean + torch.exp(0.5 * logvar) * noise


class SequentialVAE(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.appearance_encoder = (ConvAppearanceEncoder(cfg) if cfg.appearance_encoder == "conv"
                                   else AppearanceEncoder(cfg))
        self.frame_encoder = FrameEncoder(cfg)
        self.motion_posterior = MotionPosterior(cfg)
        self.decoder = Decoder(cfg)
        self.prior = RecurrentPrior(cfg) if cfg.arch == "dsvae" else ConditionalPrior(cfg)
        self.flow_head = nn.Linear(cfg.motion_dim, FLOW_CLASSES)  # S3VAE dynamic prediction

    def encode_appearance(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.appearance_encoder(video)

    def encode_motion(
        self, video: torch.Tensor, f: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.frame_encoder(video.flatten(0, 1)).unflatten(0, video.shape[:2])  # (B, T, H)
        return self.motion_posterior(feats, f)

    def encode(self, video: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """video (B, T, 3, 64, 64) in [0, 1] -> f mean, logvar (B, F), z mean, logvar (B, T, Z)."""
        f_mean, f_logvar = self.encode_appearance(video)
        z_mean, z_logvar = self.encode_motion(video, f_mean)
        return f_mean, f_logvar, z_mean, z_logvar

    def decode(self, f: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(f, z)

    def sample_motion(self, f: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Motion from the prior for appearance f (B, F), noise (B, T, Z) -> z (B, T, Z)."""
        return self.prior.sample(f, noise)

    def forward(self, video: torch.Tensor, motion_input: torch.Tensor | None = None) -> dict:
        """One training pass. motion_input: what the motion encoder sees (e.g. recoloured video).

        In training f is pooled from a few random frames (`unordered_frames` for the unordered
        architecture, `appearance_train_frames` for dsvae); at inference from all of them.
        """
        appearance_input = video
        if self.training:
            # f is a set function of the frames, so a few random ones stand for all of them:
            # it is Helminger et al.'s design and it cuts the cost of the appearance encoder.
            n = (self.cfg.unordered_frames if self.cfg.arch == "unordered"
                 else self.cfg.appearance_train_frames)
            pick = torch.randperm(video.shape[1], device=video.device)[:n]
            appearance_input = video[:, pick]
        f_mean, f_logvar = self.encode_appearance(appearance_input)
        f = reparameterise(f_mean, f_logvar)
        z_mean, z_logvar = self.encode_motion(video if motion_input is None else motion_input, f)
        z = reparameterise(z_mean, z_logvar)
        prior_mean, prior_logvar = self.prior(z, f)
        # decoding is most of a step's cost: in training, score a random subset of the frames
        # (an unbiased estimate of the whole clip's error once scaled by T / len(frames))
        frames = torch.arange(video.shape[1], device=video.device)
        n = self.cfg.decode_train_frames
        if self.training and 0 < n < video.shape[1]:
            frames = torch.randperm(video.shape[1], device=video.device)[:n].sort().values
        recon = spread = nll = None
        if self.decoder.colour_table is not None:  # exact colours: scored by their likelihood
            nll = self.decoder.exact_colour_nll(f, z[:, frames], video[:, frames])
        else:
            recon, spread = self.decoder(f, z[:, frames], with_spread=True)
        return {
            "f": f, "f_mean": f_mean, "f_logvar": f_logvar,
            "z": z, "z_mean": z_mean, "z_logvar": z_logvar,
            "prior_mean": prior_mean, "prior_logvar": prior_logvar,
            "recon": recon, "recon_frames": frames, "palette_spread": spread, "recon_nll": nll,
            "flow_logits": self.flow_head(z),
        }


def reparameterise(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)


def gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return -0.5 * (math.log(2 * math.pi) + logvar + (x - mean) ** 2 * torch.exp(-logvar))


__all__ = [
    "SequentialVAE", "FLOW_CLASSES", "colour_key", "widen_palette", "reparameterise",
    "gaussian_log_density",
]
