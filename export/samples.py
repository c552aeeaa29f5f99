"""Sample clips for the web page and a model's folder: test-split clips as small MP4s.

    python -m export.samples [--dataset sprites] [--out service/static/samples] [--scale 4]
    python -m export.samples --dataset mmnist --out models/mmnist/samples

Test-split clips only (never seen in training), upscaled with nearest neighbour so pixel art
stays crisp in the page, written with the service's own MP4 encoder, so the page's uploads are
exactly what the service reads back. Sprites: four test characters, each in a different motion.
Moving MNIST: the first four test clips (digits from MNIST images 8000-9999), as the model was
trained (8 frames, two digits). An index.json beside them lists them for the page.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from service import videoio

OUT = Path(__file__).resolve().parents[1] / "service" / "static" / "samples"
# Sprites: (index into the test split, motion name): four looks, four motions.
SPRITES_SAMPLES = ((0, "walk-front"), (1, "spellcard-left"), (2, "slash-right"), (3, "walk-left"))
MMNIST_SAMPLES = 4


def sprites_samples() -> list[tuple[str, np.ndarray, dict]]:
    """(file stem, clip (8, 64, 64, 3) uint8, index entry) for each Sprites sample."""
    from model.data import sprites

    _, test_ids = sprites.split_characters()
    out = []
    for n, (index, motion_name) in enumerate(SPRITES_SAMPLES, start=1):
        motion = sprites.MOTIONS.index(motion_name)
        character = int(test_ids[index])
        out.append((f"sprite-{n}-{motion_name}", sprites.render_clip(character, motion),
                    {"label": f"Sprite {n}, {motion_name}", "character": character,
                     "motion": motion_name}))
    return out


def mmnist_samples() -> list[tuple[str, np.ndarray, dict]]:
    """The same for Moving MNIST: the first test clips, named by their digits."""
    from model.data import moving_mnist

    test = moving_mnist.load("test", n=MMNIST_SAMPLES, cache=False, progress=False)
    out = []
    for n, (clip, digits) in enumerate(zip(test.videos, test.digits, strict=True), start=1):
        pair = "-".join(str(int(d)) for d in digits)
        out.append((f"mmnist-{n}-digits-{pair}", clip,
                    {"label": f"Moving MNIST {n}, digits {pair.replace('-', ' and ')}",
                     "digits": [int(d) for d in digits]}))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m export.samples", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--dataset", choices=["sprites", "mmnist"], default="sprites")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--scale", type=int, default=4)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    samples = sprites_samples() if args.dataset == "sprites" else mmnist_samples()
    listed = []
    for stem, clip, entry in samples:
        video = videoio.upscale(clip, args.scale)  # (8, 64 scale, 64 scale, 3)
        path = args.out / f"{stem}.mp4"
        path.write_bytes(videoio.encode_mp4(video, fps=8.0))
        listed.append({"file": path.name, **entry})
        print(f"{path}: {entry['label']}, {path.stat().st_size / 1e3:.1f} kB")
    # The page reads this list, so regenerated samples need no change to its code.
    (args.out / "index.json").write_text(json.dumps(listed, indent=1) + "\n")


if __name__ == "__main__":
    main()
