"""The sequential VAE graph (modules only, no training code).

Generative model (DSVAE, Li & Mandt 2018):
    p(x_1:T, z_1:T, f) = p(f) prod_t p(z_t | z_<t) p(x_t | z_t, f),   p(f) = N(0, I)
with an LSTM prior for z_t. The "unordered" architecture (Helminger et al. 2018) replaces the
recurrent prior by p(z_t | f) and pools f from a few frames taken in any order.

Why the appearance encoder is a bag of patches: f is pooled (mean and max) over every 2x2 patch
of every frame after per-patch layers, so it sees which colours are present but not where they
are or in which order the frames come. Pose, facing direction and action live in the shape of
the figure, which this encoder cannot see, so they have to travel through the motion codes.
(A plain DSVAE whose f reads whole frames puts the motion into f; see docs/model.md.)

Shapes: video (B, T, 3, 64, 64) float in [0, 1]; f (B, F); z (B, T, Z).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from model.config import ModelConfig

FLOW_CLASSES = 10  # 3x3 grid cell of the strongest flow, or "still"


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2))


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)
    )


class FrameEncoder(nn.Module):
    """Per-frame conv encoder: (N, 3, 64, 64) -> (N, hidden)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        w = cfg.width
        self.convs = nn.Sequential(
            _down(cfg.channels, w), _down(w, 2 * w), _down(2 * w, 4 * w), _down(4 * w, 8 * w)
        )
        self.fc = nn.Sequential(nn.Linear(8 * w * 4 * 4, cfg.hidden), nn.LeakyReLU(0.2))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(frames).flatten(1))


class AppearanceEncoder(nn.Module):
    """Bag-of-patches encoder: video (B, T, 3, 64, 64) -> f mean, log-variance (B, F)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        a = cfg.appearance_width
        self.patches = nn.Sequential(
            nn.Conv2d(cfg.channels, a, 2, 2), nn.LeakyReLU(0.2),
            nn.Conv2d(a, a, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(a, a, 1),
        )
        self.head = nn.Sequential(
            nn.Linear(2 * a, cfg.hidden), nn.LeakyReLU(0.2),
            nn.Linear(cfg.hidden, 2 * cfg.appearance_dim),
        )

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = video.shape[0]
        feats = self.patches(video.flatten(0, 1))  # (B*T, A, 32, 32)
        feats = feats.unflatten(0, (b, -1)).transpose(1, 2).flatten(2)  # (B, A, T*32*32)
        pooled = torch.cat([feats.mean(-1), feats.amax(-1)], -1)  # (B, 2A)
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


class Decoder(nn.Module):
    """p(x_t | z_t, f): f (B, F), z (B, T, Z) -> video (B, T, 3, 64, 64) in [0, 1]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        w = cfg.width
        self.w = w
        self.fc = nn.Sequential(
            nn.Linear(cfg.appearance_dim + cfg.motion_dim, cfg.hidden), nn.LeakyReLU(0.2),
            nn.Linear(cfg.hidden, 8 * w * 4 * 4), nn.LeakyReLU(0.2),
        )
        self.convs = nn.Sequential(
            _up(8 * w, 4 * w), _up(4 * w, 2 * w), _up(2 * w, w),
            nn.ConvTranspose2d(w, cfg.channels, 4, 2, 1), nn.Sigmoid(),
        )

    def forward(self, f: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        f_seq = f.unsqueeze(1) * torch.ones_like(z[..., :1])  # (B, T, F)
        fz = torch.cat([f_seq, z], -1).flatten(0, 1)  # (B*T, F+Z)
        frames = self.convs(self.fc(fz).unflatten(1, (8 * self.w, 4, 4)))  # (B*T, 3, 64, 64)
        return frames.unflatten(0, z.shape[:2])


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

    def sample(self, f: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Roll the prior out: noise (B, T, Z) ~ N(0, I) -> z (B, T, Z)."""
        b, t, zdim = noise.shape
        z_prev = noise.new_zeros(b, 1, zdim)
        state = None
        codes = []
        for step in range(t):
            hidden, state = self.lstm(z_prev, state)
            mean, logvar = self.out(hidden).chunk(2, -1)  # (B, 1, Z)
            z_prev = mean + torch.exp(0.5 * logvar) * noise[:, step:step + 1]
            codes.append(z_prev)
        return torch.cat(codes, 1)


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
        self.appearance_encoder = AppearanceEncoder(cfg)
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
        return {
            "f": f, "f_mean": f_mean, "f_logvar": f_logvar,
            "z": z, "z_mean": z_mean, "z_logvar": z_logvar,
            "prior_mean": prior_mean, "prior_logvar": prior_logvar,
            "recon": self.decode(f, z),
            "flow_logits": self.flow_head(z),
        }


def reparameterise(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)


def gaussian_log_density(x: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return -0.5 * (math.log(2 * math.pi) + logvar + (x - mean) ** 2 * torch.exp(-logvar))


__all__ = ["SequentialVAE", "FLOW_CLASSES", "reparameterise", "gaussian_log_density"]
