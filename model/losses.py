"""Loss terms: the ELBO (reconstruction, KL of f, KL of z against its prior) and the three
S3VAE self-supervision terms (static consistency, dynamic factor prediction, mutual information).

Every term is a scalar averaged over the batch (summed over pixels, frames and latent dims).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from model.vae import gaussian_log_density


def reconstruction(recon: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
    """Sum of squared errors per clip: recon, video (B, T, 3, H, W)."""
    return ((recon - video) ** 2).flatten(1).sum(-1).mean()


def kl_standard_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, var) || N(0, I)) per clip: mean, logvar (B, D)."""
    return (0.5 * (mean**2 + logvar.exp() - 1 - logvar)).sum(-1).mean()


def kl_gaussians(
    mean: torch.Tensor, logvar: torch.Tensor, prior_mean: torch.Tensor, prior_logvar: torch.Tensor
) -> torch.Tensor:
    """KL(q || p) for diagonal Gaussians, summed over frames and dims: (B, T, Z) each."""
    kl = 0.5 * (
        prior_logvar - logvar + (logvar.exp() + (mean - prior_mean) ** 2) / prior_logvar.exp() - 1
    )
    return kl.flatten(1).sum(-1).mean()


def static_consistency(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float
) -> torch.Tensor:
    """Triplet loss on appearance codes (B, F): the shuffled clip close, another clip far."""
    return F.triplet_margin_loss(anchor, positive, negative, margin=margin)


def dynamic_prediction(flow_logits: torch.Tensor, flow_labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the z_t head against flow-grid labels (B, T); -1 is ignored."""
    return F.cross_entropy(flow_logits.flatten(0, 1), flow_labels.flatten(), ignore_index=-1)


def mutual_information(
    f: torch.Tensor, f_mean: torch.Tensor, f_logvar: torch.Tensor,
    z: torch.Tensor, z_mean: torch.Tensor, z_logvar: torch.Tensor,
) -> torch.Tensor:
    """I(f; z_t) estimated on the minibatch (as S3VAE / beta-TCVAE), averaged over t.

    f, f_mean, f_logvar: (B, F); z, z_mean, z_logvar: (B, T, Z).
    log q(f_i) ~ logsumexp_j log q(f_i | x_j) - log B, and likewise for z_t and (f, z_t).
    Minibatch-weighted sampling divides by B * N instead of B in all three; that only shifts
    the estimate by log N (same gradients), and with B it reads as nats: 0 when z_t says
    nothing about f, up to log B when one determines the other.
    """
    b = f.shape[0]
    # (B, B): row i scored under clip j's posterior
    log_qf = gaussian_log_density(f[:, None], f_mean[None], f_logvar[None]).sum(-1)
    # (B, B, T)
    log_qz = gaussian_log_density(z[:, None], z_mean[None], z_logvar[None]).sum(-1)
    log_f = torch.logsumexp(log_qf, 1) - math.log(b)  # (B,)
    log_z = torch.logsumexp(log_qz, 1) - math.log(b)  # (B, T)
    log_fz = torch.logsumexp(log_qf[..., None] + log_qz, 1) - math.log(b)  # (B, T)
    return (log_fz - log_f[:, None] - log_z).mean()


def swap_cycle(f_of_swap: torch.Tensor, f_a: torch.Tensor, f_b: torch.Tensor,
               margin: float) -> torch.Tensor:
    """Triplet on f re-encoded from decode(f_A, z_B): near f_A, farther from f_B. (B, F) each.

    The motion codes of a sequential VAE soak up appearance too (a character's shapes tell
    its classes); then a swap shows B's look. Asking the swap to re-encode nearer to A's
    appearance code than to B's makes the decoder take the look from f. The targets are
    detached, and the triplet (not a plain distance) cannot be met by a constant f.
    """
    return F.triplet_margin_loss(f_of_swap, f_a.detach(), f_b.detach(), margin=margin)


def prior_moments(f: torch.Tensor) -> torch.Tensor:
    """How far the batch's appearance samples (B, F) are from N(0, I), dim by dim.

    Sum over dims of mean^2 + (variance - 1)^2 of the samples f ~ q(f|x). The KL term pulls
    each clip's posterior toward the prior, but the codes of all clips together (the aggregate
    posterior) can still sit off-centre or be narrower or wider than N(0, I); then an f drawn
    from the prior, as protocol (a) does, decodes to a character unlike any seen in training.
    This term asks the aggregate's first two moments to be the prior's.
    """
    mean = f.mean(0)
    var = f.var(0)
    return (mean**2 + (var - 1) ** 2).sum()


def aggregate_divergence(f_mean: torch.Tensor, f_var: torch.Tensor) -> torch.Tensor:
    """Jeffreys divergence between a Gaussian fit of the aggregate posterior and N(0, I).

    f_mean, f_var: (N, F) posterior means and variances of N clips. The aggregate q(f) (the
    mixture of their posteriors) has mean mu = E[f_mean] and covariance
    C = Cov(f_mean) + E[diag(f_var)] (as in DIP-VAE-II), in closed form, with no sampling noise.
    Returns KL(N(mu, C) || N(0, I)) + KL(N(0, I) || N(mu, C))
    = (tr C + tr C^-1 + mu.mu + mu.C^-1.mu) / 2 - F, zero only at mu = 0, C = I.

    Unlike prior_moments this sees directions, not only dims: codes whose dims each have
    variance 1 can still lie close to a plane (a direction of C with a small eigenvalue), and
    the prior then draws f off that plane, where the decoder has never been. The tr C^-1 half
    is what punishes such a direction.

    The fit and its inverse are computed in float64 with autocast off: codes whose dims
    collapse give C an eigenvalue near 0, and under bfloat16 autocast the product for C alone
    lost enough precision that tr C^-1 came out negative (-3662 in a training run), a value
    the optimiser would have driven further down.
    """
    n, d = f_mean.shape
    with torch.autocast(f_mean.device.type, enabled=False):
        f_mean, f_var = f_mean.double(), f_var.double()
        mu = f_mean.mean(0)
        centred = f_mean - mu
        cov = centred.T @ centred / max(1, n - 1) + torch.diag(f_var.mean(0))
        inv = torch.linalg.inv(cov)
        value = 0.5 * (torch.trace(cov) + torch.trace(inv) + mu @ mu + mu @ inv @ mu) - d
    return value.float()


class AggregateBank:
    """The appearance posteriors of the last `size` training clips, for aggregate_divergence.

    A batch of 32 clips estimates a 32 x 32 covariance badly (its estimate is biased and noisy),
    so the batch is joined to the (detached) posteriors of the clips of the last few steps. Only
    the batch carries gradients; they are scaled by N / batch so that they are as large as if
    all N clips had been encoded with the current weights. The reported value is the estimate.
    """

    def __init__(self, size: int = 1024):
        self.size = size
        self.mean: torch.Tensor | None = None
        self.var: torch.Tensor | None = None

    def divergence(self, f_mean: torch.Tensor, f_logvar: torch.Tensor) -> torch.Tensor:
        f_var = f_logvar.exp()
        mean, var = f_mean, f_var
        if self.mean is not None:
            mean, var = torch.cat([self.mean, f_mean]), torch.cat([self.var, f_var])
        value = aggregate_divergence(mean, var)
        if self.size > 0:
            self.mean, self.var = mean.detach()[-self.size:], var.detach()[-self.size:]
        scale = len(mean) / len(f_mean)
        return value.detach() + scale * (value - value.detach())
