"""The cost of a training step of several recipes, measured side by side:

    python -m model.step_cost sprites sprites-unordered [--steps 20] [--threads 1]

Each recipe's model is built as `model.train` builds it (random weights) and trained on the
same batches of its data set; the steps of the recipes are interleaved (one of each in turn),
so a neighbour's load on shared cores slows them alike. Prints the median seconds per step
after 3 warm-up steps.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from model import losses
from model.data.registry import load_training_data
from model.train import colour_augment, compute_losses, cpu_has_fast_bf16, parse_args, to_tensor
from model.vae import SequentialVAE


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m model.step_cost", description=__doc__.split(
        "\n")[0])
    p.add_argument("recipes", nargs="+")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    runs = []
    for name in a.recipes:
        cfg, _ = parse_args(["--recipe", name])
        data = load_training_data(cfg.dataset, flow=cfg.loss.dynamic_prediction > 0)
        torch.manual_seed(0)
        model = SequentialVAE(cfg.model).train()
        runs.append({"name": name, "cfg": cfg, "data": data, "model": model,
                     "opt": torch.optim.Adam(model.parameters(), lr=cfg.lr),
                     "bank": losses.AggregateBank(cfg.loss.aggregate_bank), "times": []})
    bf16 = cpu_has_fast_bf16()
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)
    for step in range(a.steps + 3):
        for run in runs:
            cfg, data = run["cfg"], run["data"]
            idx = np.sort(rng.choice(len(data.videos), cfg.batch_size, replace=False))
            start = time.perf_counter()
            video = to_tensor(data.videos[idx])
            motion_input = colour_augment(video, gen) if cfg.colour_augment else video
            flow = torch.from_numpy(data.flow[idx]) if data.flow is not None else None
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16 and bf16):
                # every term at full weight, as after the ramps
                terms = compute_losses(run["model"], video, motion_input, flow, cfg, 1.0,
                                       run["bank"], 1.0)
            run["opt"].zero_grad(set_to_none=True)
            terms["loss"].backward()
            run["opt"].step()
            if step >= 3:
                run["times"].append(time.perf_counter() - start)
    for run in runs:
        params = sum(t.numel() for t in run["model"].parameters())
        print(f"{run['name']}: {statistics.median(run['times']):.3f} s a step (median of "
              f"{len(run['times'])}, batch {run['cfg'].batch_size}, {a.threads} thread(s)), "
              f"{params / 1e6:.2f} M parameters")


if __name__ == "__main__":
    main()
