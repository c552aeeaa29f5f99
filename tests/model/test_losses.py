"""Each loss term is finite and has the right sign and zero on known cases."""

from __future__ import annotations

import math

import torch

from model import losses


def test_reconstruction_is_zero_for_a_perfect_copy_and_sums_pixels():
    video = torch.rand(2, 3, 3, 4, 4)
    assert float(losses.reconstruction(video, video)) == 0.0
    assert math.isclose(float(losses.reconstruction(video + 0.5, video)), 0.25 * 3 * 3 * 4 * 4,
                        rel_tol=1e-5)


def test_kl_terms():
    zero = torch.zeros(4, 5)
    assert float(losses.kl_standard_normal(zero, zero)) == 0.0
    assert math.isclose(float(losses.kl_standard_normal(torch.ones(4, 5), zero)), 2.5, rel_tol=1e-6)
    mean, logvar = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    assert abs(float(losses.kl_gaussians(mean, logvar, mean, logvar))) < 1e-5
    assert float(losses.kl_gaussians(mean, logvar, mean + 1, logvar)) > 0


def test_static_consistency_rewards_close_positives():
    anchor = torch.zeros(4, 8)
    far = torch.full((4, 8), 3.0)
    assert float(losses.static_consistency(anchor, anchor, far, margin=1.0)) == 0.0
    assert float(losses.static_consistency(anchor, far, anchor, margin=1.0)) > 0


def test_dynamic_prediction_ignores_the_last_frame():
    logits = torch.zeros(2, 3, 10)
    logits[..., 4] = 20.0
    labels = torch.tensor([[4, 4, -1], [4, 4, -1]])
    assert float(losses.dynamic_prediction(logits, labels)) < 1e-6
    labels[:, 0] = 1
    assert float(losses.dynamic_prediction(logits, labels)) > 1.0


def test_mutual_information_is_near_zero_when_z_says_nothing_about_the_clip():
    torch.manual_seed(0)
    b, t = 64, 4
    f_mean = torch.randn(b, 2)
    f_logvar = torch.full((b, 2), -6.0)
    f = f_mean + torch.exp(0.5 * f_logvar) * torch.randn(b, 2)
    # z posteriors identical for every clip: knowing f tells nothing about z
    flat_mean, flat_logvar = torch.zeros(b, t, 2), torch.zeros(b, t, 2)
    mi_none = losses.mutual_information(f, f_mean, f_logvar, torch.randn(b, t, 2), flat_mean,
                                        flat_logvar)
    # z a sharp copy of f: knowing f pins z down
    tied_mean = f_mean[:, None].repeat(1, t, 1)
    tied_logvar = torch.full((b, t, 2), -6.0)
    tied_z = tied_mean + torch.exp(0.5 * tied_logvar) * torch.randn(b, t, 2)
    mi_tied = losses.mutual_information(f, f_mean, f_logvar, tied_z, tied_mean, tied_logvar)
    assert torch.isfinite(mi_none) and torch.isfinite(mi_tied)
    assert abs(float(mi_none)) < 0.1
    assert float(mi_tied) > 3.0


def test_swap_cycle_wants_the_swap_nearer_its_appearance_source():
    f_a, f_b = torch.zeros(3, 6), torch.full((3, 6), 2.0)
    assert float(losses.swap_cycle(f_a.clone(), f_a, f_b, margin=1.0)) == 0.0
    f_of_swap = (0.9 * f_b).requires_grad_()  # the swap looks like B: penalised
    loss = losses.swap_cycle(f_of_swap, f_a, f_b, margin=1.0)
    assert float(loss) > 1.0
    loss.backward()
    assert f_of_swap.grad is not None and float(f_of_swap.grad.abs().sum()) > 0


def test_prior_moments_is_small_for_prior_draws_and_grows_with_an_offset_or_a_squeeze():
    gen = torch.Generator().manual_seed(0)
    draws = torch.randn(4096, 8, generator=gen)
    assert float(losses.prior_moments(draws)) < 0.05
    assert float(losses.prior_moments(draws + 1.0)) > 7.5  # 8 dims, each off by 1
    assert float(losses.prior_moments(0.5 * draws)) > 4.0  # variance 0.25 in 8 dims
    shifted = (draws + 1.0).requires_grad_()
    losses.prior_moments(shifted).backward()
    assert float(shifted.grad.sum()) > 0  # descent moves the codes back toward 0


def test_aggregate_divergence_is_zero_at_the_prior_and_sees_a_squeezed_direction():
    d = 8
    # every clip's posterior is the prior itself: the aggregate is exactly N(0, I)
    assert abs(float(losses.aggregate_divergence(torch.zeros(64, d), torch.ones(64, d)))) < 1e-5
    gen = torch.Generator().manual_seed(0)
    draws = torch.randn(4096, d, generator=gen)
    sharp = torch.full((4096, d), 1e-6)  # posteriors as points: the aggregate is the draws
    assert float(losses.aggregate_divergence(draws, sharp)) < 0.05
    assert float(losses.aggregate_divergence(draws + 1.0, sharp)) > 7.5  # mean off by 1 per dim
    # dims 0 and 1 each of variance 1 but correlated 0.97: the direction (1, -1) has variance
    # 0.03, which the per-dim moments cannot see and the prior fills
    plane = draws.clone()
    plane[:, 1] = 0.97 * draws[:, 0] + math.sqrt(1 - 0.97**2) * draws[:, 1]
    assert float(losses.prior_moments(plane)) < 0.05
    assert float(losses.aggregate_divergence(plane, sharp)) > 12.0  # about 15.9 in theory
    squeezed = plane.clone().requires_grad_()
    losses.aggregate_divergence(squeezed, sharp).backward()
    step = squeezed - 0.01 * squeezed.grad  # one descent step widens the squeezed direction
    assert float(losses.aggregate_divergence(step.detach(), sharp)) < float(
        losses.aggregate_divergence(plane, sharp))


def test_aggregate_bank_joins_recent_clips_and_scales_the_batch_gradient():
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(32, 4, generator=gen), torch.full((32, 4), -2.0)) for _ in range(6)]
    bank = losses.AggregateBank(size=96)
    for mean, logvar in batches[:5]:
        bank.divergence(mean, logvar)
    assert len(bank.mean) == 96  # the last three batches only
    mean = batches[5][0].clone().requires_grad_()
    value = bank.divergence(mean, batches[5][1])
    held = torch.cat([b[0] for b in batches[2:5]])
    joined = torch.cat([held, mean])
    expected = losses.aggregate_divergence(joined, torch.full((128, 4), math.exp(-2.0)))
    assert math.isclose(float(value), float(expected), rel_tol=1e-5)
    value.backward()
    grad = mean.grad.clone()
    mean.grad = None
    (expected * 128 / 32).backward()  # the batch's gradient, as if all 128 were current
    assert torch.allclose(grad, mean.grad, rtol=1e-4, atol=1e-7)
    # a bank of size 0 keeps nothing: each batch alone
    alone = losses.AggregateBank(size=0)
    for b in batches[:2]:
        v = alone.divergence(*b)
    assert alone.mean is None
    assert math.isclose(float(v), float(losses.aggregate_divergence(
        batches[1][0], batches[1][1].exp())), rel_tol=1e-5)


def test_the_aggregate_divergence_stays_exact_under_bfloat16_autocast():
    """Collapsed dims make the fit nearly singular: the value must stay >= 0 and match float64."""
    from model.losses import aggregate_divergence

    gen = torch.Generator().manual_seed(0)
    f_mean = torch.randn(1024, 32, generator=gen) * 3
    f_mean[:, :6] = 0.01 * torch.randn(1024, 6, generator=gen)  # six dims nearly collapsed
    f_var = torch.full((1024, 32), 1e-4)
    exact = aggregate_divergence(f_mean.double(), f_var.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = aggregate_divergence(f_mean, f_var)
    assert got.dtype == torch.float32 and float(got) > 0
    assert abs(float(got) - float(exact)) <= 1e-4 * float(exact)
