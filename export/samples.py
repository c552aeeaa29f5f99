"""The web page's sample clips: four Sprites test characters as small MP4s.

    python -m export.samples [--out service/static/samples] [--scale 4]

Test-split characters only (never seen in training), each in a different motion, upscaled with
nearest neighbour so the pixel art stays crisp in the page. Written with the service's own MP4
encoder, so the page's uploads are exactly what the service reads back.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from model.data import sprites
from service import videoio

OUT = Path(__file__).resolve().parents[1] / "service" / "static" / "samples"
# (index into the test split, motion label): four looks, four motions.
SAMPLES = ((0, sprites.MOTIONS.index("walk-front")), (1, sprites.MOTIONS.index("spellcard-left")),
           (2, sprites.MOTIONS.index("slash-right")), (3, sprites.MOTIONS.index("walk-left")))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m export.samples", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--scale", type=int, default=4)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    _, test_ids = sprites.split_characters()
    listed = []
    for n, (index, motion) in enumerate(SAMPLES, start=1):
        character = int(test_ids[index])
        clip = sprites.render_clip(character, motion)  # (8, 64, 64, 3)
        video = videoio.upscale(clip, args.scale)  # (8, 64 scale, 64 scale, 3)
        path = args.out / f"sprite-{n}-{sprites.MOTIONS[motion]}.mp4"
        path.write_bytes(videoio.encode_mp4(video, fps=8.0))
        listed.append({"file": path.name, "label": f"Sprite {n}, {sprites.MOTIONS[motion]}",
                       "character": character, "motion": sprites.MOTIONS[motion]})
        print(f"{path}: character {character}, {sprites.MOTIONS[motion]}, "
              f"{path.stat().st_size / 1e3:.1f} kB")
    # The page reads this list, so regenerated samples need no change to its code.
    (args.out / "index.json").write_text(json.dumps(listed, indent=1) + "\n")


if __name__ == "__main__":
    main()
