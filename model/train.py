"""Train the sequential VAE: python -m model.train --out runs/sprites [--resume] [--max-minutes 120]

Reads top to bottom: options, data, model and optimiser, (resume), one loop with a progress bar,
and at the end of every epoch a checkpoint, the loss curves and image grids of reconstructions
and swaps. The final weights are written as safetensors with the config in their metadata.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import time
import tomllib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from model import losses
from model.checkpoint import load_model, read_metadata, save_model
from model.config import LossConfig, ModelConfig, TrainConfig
from model.data.registry import canonical, load_training_data
from model.images import save_curves, save_grid, swap_grid
from model.vae import SequentialVAE, colour_key, widen_palette

RECIPES = Path(__file__).parent / "recipes"


def load_recipe(name: str, parser: argparse.ArgumentParser) -> dict:
    """A recipe's options: `name` is a file under model/recipes/ (without .toml) or a path.

    Its keys are the parser's options (dashes as underscores); an unknown key is an error, so a
    misspelt weight cannot be silently ignored.
    """
    path = Path(name) if name.endswith(".toml") else RECIPES / f"{name}.toml"
    if not path.exists():
        known = sorted(q.stem for q in RECIPES.glob("*.toml"))
        parser.error(f"no recipe {name!r} (recipes: {', '.join(known)}; or a path to a .toml)")
    values = tomllib.loads(path.read_text())
    dests = {a.dest for a in parser._actions} - {"help", "recipe", "resume", "init_from"}
    unknown = sorted(set(values) - dests)
    if unknown:
        parser.error(f"recipe {path}: unknown keys {unknown}")
    return values


def parse_args(argv: list[str] | None = None) -> tuple[TrainConfig, bool]:
    p = argparse.ArgumentParser(description="Train vdis's sequential VAE.")
    p.add_argument("--recipe", default="", metavar="NAME",
                   help="take every option's default from model/recipes/NAME.toml (or a .toml "
                        "path); flags given here still win. `sprites` is the shipped model")
    p.add_argument("--dataset", default="sprites", help="sprites | mmnist | folder:PATH")
    p.add_argument("--arch", default="dsvae", choices=["dsvae", "unordered"])
    p.add_argument("--posterior", default="factorised", choices=["factorised", "full"])
    m = ModelConfig()
    p.add_argument("--appearance-dim", type=int, default=m.appearance_dim)
    p.add_argument("--motion-dim", type=int, default=m.motion_dim)
    p.add_argument("--width", type=int, default=m.width)
    p.add_argument("--hidden", type=int, default=m.hidden)
    p.add_argument("--palette", type=int, default=0, metavar="K",
                   help=f"colours of the palette decoder (default {m.decoder_palette}); with "
                        "--init-from, a larger K widens the starting model's palette")
    p.add_argument("--motion-view", default=m.motion_view, choices=["silhouette", "rgb"],
                   help="what the motion encoder sees (silhouette: clips on a dark background)")
    p.add_argument("--appearance-encoder", default=m.appearance_encoder,
                   choices=["patches", "conv"],
                   help="what f is pooled from: patch colours by band (patches) or 33x33 "
                        "shapes over all positions (conv, for digits)")
    t = TrainConfig()
    p.add_argument("--epochs", type=int, default=t.epochs)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--max-minutes", type=float, default=t.max_minutes,
                   help="time budget; the learning-rate schedule ends with it (0: none)")
    for name in ("beta_appearance", "beta_motion", "static_consistency", "dynamic_prediction",
                 "mutual_information", "swap_cycle", "prior_moments", "aggregate_prior",
                 "palette_spread"):
        p.add_argument("--" + name.replace("_", "-"), type=float,
                       default=getattr(LossConfig(), name))
    p.add_argument("--aggregate-bank", type=int, default=LossConfig().aggregate_bank,
                   metavar="N", help="clips in the aggregate-prior term's Gaussian fit")
    p.add_argument("--kl-warmup-steps", type=int, default=LossConfig().kl_warmup_steps)
    p.add_argument("--prior-warmup-steps", type=int, default=LossConfig().prior_warmup_steps,
                   help="the prior terms ramp in over these steps after the KL ramp (0: with it)")
    p.add_argument("--exact-colours", action="store_true",
                   help="palette entries choose among the training data's exact colours, "
                        "scored by their likelihood (pixel art)")
    p.add_argument("--no-colour-augment", action="store_true")
    p.add_argument("--recolour-targets", type=float, default=TrainConfig().recolour_targets,
                   help="share of clips whose target (and f input) is recoloured too")
    p.add_argument("--no-bf16", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--subset", type=int, default=0, help="train on the first N clips only")
    p.add_argument("--out", default="runs/sprites")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--init-from", default="", metavar="MODEL",
                   help="fine-tune: start from this .safetensors model (its config is used)")
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--recipe", default="")
    recipe = pre.parse_known_args(argv)[0].recipe
    if recipe:
        p.set_defaults(**load_recipe(recipe, p))
    a = p.parse_args(argv)
    if a.init_from:  # the graph is the starting model's; its file says how to rebuild it
        model, _ = read_metadata(Path(a.init_from))
        if a.palette:  # main() widens the loaded decoder to match
            model.decoder_palette = a.palette
    else:
        model = ModelConfig(arch=a.arch, posterior=a.posterior, appearance_dim=a.appearance_dim,
                            motion_dim=a.motion_dim, width=a.width, hidden=a.hidden,
                            motion_view=a.motion_view, appearance_encoder=a.appearance_encoder,
                            decoder_palette=a.palette or m.decoder_palette)
    loss = LossConfig(
        beta_appearance=a.beta_appearance, beta_motion=a.beta_motion,
        static_consistency=a.static_consistency, dynamic_prediction=a.dynamic_prediction,
        mutual_information=a.mutual_information, swap_cycle=a.swap_cycle,
        prior_moments=a.prior_moments, aggregate_prior=a.aggregate_prior,
        aggregate_bank=a.aggregate_bank, palette_spread=a.palette_spread,
        kl_warmup_steps=a.kl_warmup_steps, prior_warmup_steps=a.prior_warmup_steps)
    cfg = TrainConfig(
        dataset=canonical(a.dataset), model=model, loss=loss, batch_size=a.batch_size, lr=a.lr,
        epochs=a.epochs, max_minutes=a.max_minutes, colour_augment=not a.no_colour_augment,
        recolour_targets=a.recolour_targets, exact_colours=a.exact_colours,
        bf16=not a.no_bf16, seed=a.seed, threads=a.threads, subset=a.subset, out=a.out,
        init_from=a.init_from, recipe=recipe)
    return cfg, a.resume


def colour_augment(video: torch.Tensor, generator: torch.Generator,
                   share: float = 1.0) -> torch.Tensor:
    """Recolour each clip at random (channel permutation and gains): (B, T, 3, H, W).

    `share` of the clips (drawn per clip) are recoloured, the others are returned as they are.
    The motion encoder only ever sees recoloured clips, so colours cannot be carried reliably
    by the motion codes. Recolouring the reconstruction target too (and what f reads), with
    an independent draw, goes further: the motion codes then cannot tell the target's colours
    at all, so the decoder has to take them from f.
    """
    b = video.shape[0]
    perms = torch.stack([torch.randperm(3, generator=generator) for _ in range(b)])  # (B, 3)
    out = torch.gather(video, 2, perms[:, None, :, None, None].expand_as(video))
    gains = 0.6 + 0.8 * torch.rand(b, 1, 3, 1, 1, generator=generator)
    out = (out * gains).clamp(0, 1)
    if share >= 1.0:
        return out
    keep = torch.rand(b, 1, 1, 1, 1, generator=generator) >= share
    return torch.where(keep, video, out)


def cpu_has_fast_bf16() -> bool:
    """True where the CPU multiplies bfloat16 in hardware (AMX or AVX512-BF16).

    Elsewhere (e.g. an AVX2-only AMD EPYC) bf16 autocast is emulated and measured 10x slower
    than float32, so it is only used where these flags are present.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags for flag in ("amx_bf16", "avx512_bf16"))


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def compute_losses(model: SequentialVAE, video: torch.Tensor, motion_input: torch.Tensor,
                   flow: torch.Tensor | None, cfg: TrainConfig, kl_scale: float,
                   bank: losses.AggregateBank | None = None,
                   prior_scale: float | None = None) -> dict[str, torch.Tensor]:
    """The loss terms of one batch and their weighted sum ("loss").

    `bank` carries recent clips' appearance posteriors between steps for the aggregate-prior
    term; without one the term is estimated on this batch alone. `prior_scale` weighs the
    prior terms (default: `kl_scale`).
    """
    prior_scale = kl_scale if prior_scale is None else prior_scale
    lc = cfg.loss
    out = model(video, motion_input)
    frames = out["recon_frames"]
    if out["recon_nll"] is not None:  # exact colours: -log p(x | z, f), nats per clip
        recon = out["recon_nll"].flatten(1).sum(-1).mean()
    else:  # RGB output: sum of squared errors per clip
        recon = losses.reconstruction(out["recon"].float(), video[:, frames])
    terms = {
        "recon": recon * (video.shape[1] / len(frames)),
        "kl_f": losses.kl_standard_normal(out["f_mean"].float(), out["f_logvar"].float()),
        "kl_z": losses.kl_gaussians(out["z_mean"].float(), out["z_logvar"].float(),
                                    out["prior_mean"].float(), out["prior_logvar"].float()),
    }
    total = terms["recon"] + kl_scale * (lc.beta_appearance * terms["kl_f"]
                                         + lc.beta_motion * terms["kl_z"])
    if lc.static_consistency > 0:
        # positive: f of other frames of the same clip, in another order (f pools over frames)
        n = model.cfg.appearance_train_frames or video.shape[1]
        positive, _ = model.encode_appearance(video[:, torch.randperm(video.shape[1])[:n]])
        anchor = out["f_mean"]
        terms["triplet"] = losses.static_consistency(
            anchor.float(), positive.float(), anchor.roll(1, 0).float(), lc.triplet_margin)
        total = total + lc.static_consistency * terms["triplet"]
    if lc.swap_cycle > 0:
        swapped = model.decode(out["f"], out["z"].roll(1, 0))  # appearance of A, motion of B
        f_of_swap, _ = model.encode_appearance(swapped)
        f_a = out["f_mean"].float()
        terms["cycle"] = losses.swap_cycle(f_of_swap.float(), f_a, f_a.roll(1, 0),
                                           lc.triplet_margin)
        total = total + lc.swap_cycle * terms["cycle"]
    if lc.palette_spread > 0 and out["palette_spread"] is not None:
        terms["spread"] = out["palette_spread"].float().flatten(1).sum(-1).mean() * (
            video.shape[1] / len(frames))
        total = total + lc.palette_spread * terms["spread"]
    # the prior terms ramp in (prior_scale): at the start the codes are not yet spread (the KL
    # weighs nothing), and a covariance fit of them would be near singular
    if lc.prior_moments > 0:
        terms["moments"] = losses.prior_moments(out["f"].float())
        total = total + prior_scale * lc.prior_moments * terms["moments"]
    if lc.aggregate_prior > 0:
        bank = bank if bank is not None else losses.AggregateBank(0)
        terms["aggregate"] = bank.divergence(out["f_mean"].float(), out["f_logvar"].float())
        total = total + prior_scale * lc.aggregate_prior * terms["aggregate"]
    if lc.dynamic_prediction > 0 and flow is not None:
        terms["flow"] = losses.dynamic_prediction(out["flow_logits"].float(), flow)
        total = total + lc.dynamic_prediction * terms["flow"]
    if lc.mutual_information > 0:
        terms["mi"] = losses.mutual_information(
            out["f"].float(), out["f_mean"].float(), out["f_logvar"].float(),
            out["z"].float(), out["z_mean"].float(), out["z_logvar"].float())
        total = total + lc.mutual_information * terms["mi"]
    terms["loss"] = total
    return terms


MAX_EXACT_COLOURS = 1024


def exact_colour_table(videos: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Every colour that occurs in the clips (N, T, H, W, 3) uint8, as (C, 3) floats in [0, 1]
    sorted by their 24-bit value (what vae.Decoder.colour_index looks up)."""
    seen = np.zeros(1 << 24, bool)
    for i in range(0, len(videos), chunk):
        rgb = np.asarray(videos[i:i + chunk], np.int32)
        seen[colour_key(rgb)] = True
    keys = np.flatnonzero(seen)
    if len(keys) > MAX_EXACT_COLOURS:
        raise SystemExit(f"--exact-colours: the training data has {len(keys)} distinct colours, "
                         f"more than {MAX_EXACT_COLOURS}; it is for pixel art with a few "
                         "dozen, so leave it off for these clips")
    rgb = np.stack([keys >> 16, (keys >> 8) & 255, keys & 255], 1)
    return (rgb / 255).astype(np.float32)


def to_tensor(clips: np.ndarray) -> torch.Tensor:
    """(B, T, H, W, 3) uint8 -> (B, T, 3, H, W) float in [0, 1].

    Copies, so read-only memory-mapped clips give a writable tensor.
    """
    return torch.from_numpy(np.array(clips)).permute(0, 1, 4, 2, 3).float() / 255.0


def main(argv: list[str] | None = None) -> Path:
    cfg, resume = parse_args(argv)
    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    aug_gen = torch.Generator().manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    # ---- data: uint8 clips in RAM, flow labels for the dynamic prediction term
    data = load_training_data(cfg.dataset, subset=cfg.subset,
                              flow=cfg.loss.dynamic_prediction > 0)
    n = len(data.videos)
    steps_per_epoch = max(1, n // cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    preview = to_tensor(data.preview)  # fixed clips for the image grids

    # ---- model, optimiser, schedule (linear warm-up, cosine decay to 5%)
    started_from: dict = {}
    if cfg.init_from:  # cfg.model is already this file's config (parse_args)
        model, started_from = load_model(Path(cfg.init_from), str(device))
        print(f"starting from {cfg.init_from} ({started_from.get('epochs', '?')} epochs)")
        if cfg.model.decoder_palette != model.cfg.decoder_palette:
            print(f"palette widened from {model.cfg.decoder_palette} to "
                  f"{cfg.model.decoder_palette} colours")
            widen_palette(model, cfg.model.decoder_palette, seed=cfg.seed)
            model.to(device)
    else:
        table = None
        if cfg.exact_colours:
            table = exact_colour_table(data.videos)
            cfg.model.decoder_colours = len(table)
            print(f"exact colours: {len(table)} in the training data")
        model = SequentialVAE(cfg.model).to(device)
        if table is not None:
            model.decoder.colour_table.copy_(torch.from_numpy(table))
    # a fine-tune starts from trained codes: the KL terms weigh fully from its first step
    kl_warmup = 0 if cfg.init_from else cfg.loss.kl_warmup_steps
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)

    def lr_at(step: int) -> float:
        warm = min(1.0, (step + 1) / 200)
        progress = min(1.0, step / max(1, total_steps))
        if cfg.max_minutes:  # with a time budget the schedule ends when the budget does
            elapsed = budget_used + time.time() - started
            progress = max(progress, min(1.0, elapsed / (cfg.max_minutes * 60)))
        return cfg.lr * warm * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))

    start_epoch, step, history, budget_used = 0, 0, [], 0.0
    if resume and (out_dir / "last.pt").exists():
        state = torch.load(out_dir / "last.pt", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, step = int(state["epoch"]), int(state["step"])
        budget_used = float(state.get("seconds", 0.0))
        history = json.loads((out_dir / "history.json").read_text())
        print(f"resumed from epoch {start_epoch}, step {step}")
    (out_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))

    use_bf16 = cfg.bf16 and device.type == "cpu" and cpu_has_fast_bf16()
    print(f"device {device}, bfloat16 autocast {'on' if use_bf16 else 'off'}", flush=True)
    started = time.time()
    bank = losses.AggregateBank(cfg.loss.aggregate_bank)  # refills within a few steps on resume
    log = open(out_dir / "log.csv", "a", newline="")
    writer = None
    # ---- the loop
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        order = rng.permutation(n)
        sums: dict[str, float] = {}
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   unit="step", mininterval=5)
        for i in bar:
            idx = np.sort(order[i * cfg.batch_size:(i + 1) * cfg.batch_size])
            video = to_tensor(data.videos[idx]).to(device)
            motion_input = colour_augment(video, aug_gen) if cfg.colour_augment else video
            if cfg.recolour_targets > 0:
                video = colour_augment(video, aug_gen, cfg.recolour_targets)
            flow = torch.from_numpy(data.flow[idx]).to(device) if data.flow is not None else None
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            kl_scale = min(1.0, step / kl_warmup) if kl_warmup else 1.0
            prior_scale = kl_scale
            if cfg.loss.prior_warmup_steps and kl_warmup:  # after the KL ramp, a ramp of its own
                prior_scale = min(1.0, max(0.0, step - kl_warmup) / cfg.loss.prior_warmup_steps)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                terms = compute_losses(model, video, motion_input, flow, cfg, kl_scale, bank,
                                       prior_scale)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
            opt.step()
            step += 1
            values = {k: float(v.detach()) for k, v in terms.items()}
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix({k: f"{v:.2f}" for k, v in values.items()}, refresh=False)
            if step % 20 == 0:
                row = {"step": step, "epoch": epoch + 1, "lr": lr_at(step),
                       "minutes": (time.time() - started) / 60, **values}
                if writer is None:
                    writer = csv.DictWriter(log, fieldnames=list(row))
                    if log.tell() == 0:
                        writer.writeheader()
                writer.writerow(row)
                log.flush()
            if cfg.max_minutes and budget_used + time.time() - started > cfg.max_minutes * 60:
                break
        bar.close()

        # ---- end of epoch: curves, images, checkpoint
        history.append({"epoch": epoch + 1, "step": step,
                        **{k: v / max(1, i + 1) for k, v in sums.items()}})
        (out_dir / "history.json").write_text(json.dumps(history, indent=1))
        print(f"epoch {epoch + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in history[-1].items()
                                                 if k not in ("epoch", "step")), flush=True)
        save_curves(history, out_dir / "curves.png")
        model.eval()
        with torch.no_grad():
            f_mean, _, z_mean, _ = model.encode(preview.to(device))
            recon = model.decode(f_mean, z_mean).cpu()
            save_grid(torch.stack([preview, recon], 1).flatten(0, 1), out_dir / "recon.png")
            save_grid(swap_grid(model, preview.to(device)).cpu(), out_dir / "swaps.png")
        seconds = budget_used + time.time() - started
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                    "epoch": epoch + 1, "step": step, "seconds": seconds}, out_dir / "last.pt")
        meta = {"dataset": cfg.dataset, "commit": git_commit(), "epochs": epoch + 1,
                "steps": step, "minutes": round(seconds / 60, 1), "train_config": asdict(cfg)}
        # a fine-tune: what the starting model had been through; from random weights: nothing
        meta["started_from"] = {k: started_from[k] for k in
                                ("epochs", "steps", "minutes", "train_config", "started_from")
                                if k in started_from}
        save_model(model, out_dir / "model.safetensors", meta)
        if cfg.max_minutes and seconds > cfg.max_minutes * 60:
            print(f"time budget of {cfg.max_minutes} min reached after epoch {epoch + 1}")
            break
    log.close()
    return out_dir / "model.safetensors"


if __name__ == "__main__":
    main()
