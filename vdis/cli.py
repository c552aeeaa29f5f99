"""The `vdis` command: serve the model, run a worker, call a running service, train and export.

    vdis serve [--host H] [--port P] [--models-dir DIR | --model-dir DIR]
    vdis worker --redis-url redis://...
    vdis models                          the models a service serves, and what each expects
    vdis encode FILE [-o codes.json|codes.npz] [--model NAME]
    vdis decode codes.json -o OUT.mp4
    vdis swap A B -o OUT.mp4 [--both]
    vdis generate FILE -n 4 -o OUT.mp4 [--seed S]
    vdis train|evaluate|export ...      (need the training extras: pip install 'vdis[train]')
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from vdis.client import DEFAULT_URL, Client, ClipOptions, Codes, VdisError

# Subcommands handed whole to another module's own command line (its --help included).
DELEGATED = {
    "train": ("model.train", "train the sequential VAE (python -m model.train)"),
    "evaluate": ("model.evaluate", "train the Sprites judge or evaluate a model "
                                   "(python -m model.evaluate)"),
    "export": ("export.__main__", "export a checkpoint to ONNX, or verify an export "
                                  "(python -m export)"),
}
FORMATS = {".mp4": "mp4", ".gif": "gif", ".png": "png", ".npz": "npz"}
T = TypeVar("T")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vdis", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="vdis: appearance and motion codes from short videos, swaps and generation.",
        epilog="Client commands talk to a running service: --url, or $VDIS_URL, default "
               f"{DEFAULT_URL}; a service with API keys wants --api-key or $VDIS_API_KEY."
               "\nRun `vdis COMMAND --help` for a command's options.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="serve the HTTP API and the web page",
                           description="Serve the HTTP API, its docs (/docs) and the web page "
                                       "(/) with uvicorn. Other settings: VDIS_* variables.")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--models-dir", type=Path, help="serve every exported model in this "
                                                       "folder (VDIS_MODELS_DIR; default: the "
                                                       "shipped models/)")
    serve.add_argument("--model-dir", type=Path, help="serve this one exported model alone "
                                                      "(VDIS_MODEL_DIR)")
    serve.add_argument("--redis-url", help="queue jobs on this Redis for `vdis worker`s "
                                           "(VDIS_REDIS_URL; default: run the model in-process)")
    serve.add_argument("--log-level", default="info")

    worker = sub.add_parser("worker", help="run the model for API processes, via Redis",
                            description="Take jobs from the Redis queue and run the model.")
    worker.add_argument("--redis-url", help="VDIS_REDIS_URL (required one way or the other)")
    worker.add_argument("--models-dir", type=Path, help="VDIS_MODELS_DIR")
    worker.add_argument("--model-dir", type=Path, help="VDIS_MODEL_DIR")

    client = argparse.ArgumentParser(add_help=False)
    client.add_argument("--url", default=None,
                        help=f"the service (default: $VDIS_URL, else {DEFAULT_URL})")
    client.add_argument("--timeout", type=float, default=300.0, help="seconds (default 300)")
    client.add_argument("--api-key", default=None,
                        help="for a service started with VDIS_API_KEYS (default: $VDIS_API_KEY, "
                             "which keeps the key out of the process list)")
    sub.add_parser("models", parents=[client], help="the models a service serves",
                   description="List the service's models: name, what each was trained on and "
                               "expects, frame size, clip length, code sizes.")
    client.add_argument("--model", default=None, metavar="NAME",
                        help="the model to run, by name (`vdis models`; default: the "
                             "service's default model)")
    clip = argparse.ArgumentParser(add_help=False)
    clip.add_argument("--frames", type=int, help="T, frames taken from each video "
                                                 "(default: the model's training length)")
    clip.add_argument("--start", type=float, help="take frames from this time (s) on")
    clip.add_argument("--fps", type=float, help="with --start: one frame every 1/fps s")
    clip.add_argument("--fit", choices=["crop", "pad"], default="crop",
                      help="make frames square by cropping or padding (default crop)")
    video_out = argparse.ArgumentParser(add_help=False)
    video_out.add_argument("-o", "--out", type=Path, required=True,
                           help="output file; its suffix picks the format: "
                                ".mp4, .gif, .png (frames in a strip), .npz (arrays)")
    video_out.add_argument("--scale", type=int, default=1,
                           help="upscale frames by this factor (default 1)")
    video_out.add_argument("--out-fps", type=float, default=8.0, help="frame rate (default 8)")

    encode = sub.add_parser("encode", parents=[client, clip], help="a video's codes",
                            description="The appearance code f (F,) and the motion codes "
                                        "z_1..z_T (T, Z) of a video.")
    encode.add_argument("file", type=Path)
    encode.add_argument("-o", "--out", type=Path,
                        help="write JSON (.json, the form /decode takes) or arrays (.npz); "
                             "default: JSON on stdout")

    decode = sub.add_parser("decode", parents=[client, video_out], help="codes back to a video",
                            description="A video from codes, as `vdis encode` writes them "
                                        "(.json or .npz) or /encode answers (JSON).")
    decode.add_argument("codes", type=Path, metavar="CODES",
                        help="codes.json or codes.npz from `vdis encode`")

    swap = sub.add_parser("swap", parents=[client, clip, video_out],
                          help="the appearance of A with the motion of B",
                          description="A video with the appearance of A and the motion of B.")
    swap.add_argument("appearance", type=Path, metavar="A", help="the video whose looks are kept")
    swap.add_argument("motion", type=Path, metavar="B", help="the video whose motion is kept")
    swap.add_argument("--both", action="store_true",
                      help="also B's appearance with A's motion, side by side")

    generate = sub.add_parser("generate", parents=[client, clip, video_out],
                              help="new motions for a video's appearance (or the converse)",
                              description="n videos sharing one factor with FILE; the other "
                                          "is drawn from the model's prior. Tiled in a grid.")
    generate.add_argument("file", type=Path)
    generate.add_argument("-n", type=int, default=4, help="how many (default 4)")
    generate.add_argument("--sample", choices=["motion", "appearance"], default="motion",
                          help="what is drawn (default motion: FILE's appearance is kept)")
    generate.add_argument("--seed", type=int, help="for repeatable draws")

    for name, (_, help_text) in DELEGATED.items():
        sub.add_parser(name, help=help_text + "; needs torch", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in DELEGATED:
        return delegate(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except VdisError as error:
        hint = " (give the key with --api-key or $VDIS_API_KEY)" if error.status == 401 else ""
        print(f"vdis {args.command}: {error}{hint}", file=sys.stderr)
        return 1
    except FileNotFoundError as error:
        print(f"vdis {args.command}: no such file: {error.filename}", file=sys.stderr)
        return 2


def delegate(command: str, argv: list[str]) -> int:
    """Run `python -m MODULE argv` in this process; its parser shows `vdis COMMAND` as prog."""
    import importlib

    module_name = DELEGATED[command][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and error.name.split(".")[0] in ("torch", "onnx", "onnxscript",
                                                       "safetensors", "matplotlib", "tqdm"):
            print(f"vdis {command}: needs the training extras, and {error.name!r} is not "
                  "installed here (a serving install has no torch). Install them with:\n"
                  "    pip install -e '.[train]'", file=sys.stderr)
            return 2
        raise
    # argparse takes `prog` from argv[0]: make the delegated help say `vdis train`, not `vdis`.
    saved, sys.argv = sys.argv, [f"vdis {command}", *argv]
    try:
        result = module.main(argv)
    except SystemExit as exit_:  # --help and usage errors
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    finally:
        sys.argv = saved
    return result if isinstance(result, int) else 0


# ---------------------------------------------------------------------------------------------
# Subcommands


def _model_settings(args: argparse.Namespace) -> None:
    """--models-dir / --model-dir into the environment the service's settings read."""
    if args.models_dir:
        os.environ["VDIS_MODELS_DIR"] = str(args.models_dir.resolve())
    if args.model_dir:
        os.environ["VDIS_MODEL_DIR"] = str(args.model_dir.resolve())


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    # The app reads its settings from the environment when service.app is imported.
    _model_settings(args)
    if args.redis_url:
        os.environ["VDIS_REDIS_URL"] = args.redis_url
    print(f"vdis: serving on http://{args.host}:{args.port}/ (API docs at /docs)",
          file=sys.stderr, flush=True)
    uvicorn.run("service.app:app", host=args.host, port=args.port, log_level=args.log_level)
    return 0


def worker(args: argparse.Namespace) -> int:
    _model_settings(args)
    if args.redis_url:
        os.environ["VDIS_REDIS_URL"] = args.redis_url
    from service.worker import main as worker_main

    worker_main()
    return 0


def models(args: argparse.Namespace) -> int:
    with _client(args) as vdis:
        listed = vdis.models()
    print(f"{'':2}{'model':<24} {'frames':>10} {'T':>3} {'F':>4} {'Z':>4}  domain")
    for m in listed:
        size = f"{m['frame_size']}x{m['frame_size']}"
        print(f"{'*' if m['default'] else ' ':2}{m['name']:<24} {size:>10} {m['seq_len']:>3} "
              f"{m['appearance_dim']:>4} {m['motion_dim']:>4}  {m['domain'] or '(not said)'}")
    print("* the default (no --model)", file=sys.stderr)
    return 0


def encode(args: argparse.Namespace) -> int:
    with _client(args) as vdis:
        codes = _waiting(f"encoding {args.file}",
                         lambda: vdis.encode(args.file, _clip(args), model=args.model))
    if args.out and args.out.suffix == ".npz":
        import numpy as np

        np.savez_compressed(args.out, appearance_mean=codes.appearance,
                            appearance_logvar=codes.appearance_logvar, motion_mean=codes.motion,
                            motion_logvar=codes.motion_logvar,
                            frame_indices=codes.frame_indices, model=codes.model)
    elif args.out:
        args.out.write_text(json.dumps(codes.to_json()))
    else:
        print(json.dumps(codes.to_json()))
        return 0
    print(f"{args.out}: appearance {codes.appearance.shape}, motion {codes.motion.shape} "
          f"({codes.model})", file=sys.stderr)
    return 0


def decode(args: argparse.Namespace) -> int:
    codes = _read_codes(args.codes)
    with _client(args) as vdis:
        videos = _waiting(f"decoding {args.codes}",
                          lambda: vdis.decode(codes, model=args.model,
                                              format=_format(args.out),
                                              out_fps=args.out_fps, scale=args.scale))
    return _wrote(args.out, videos)


def swap(args: argparse.Namespace) -> int:
    with _client(args) as vdis:
        videos = _waiting(
            f"swapping {args.appearance} x {args.motion}",
            lambda: vdis.swap(args.appearance, args.motion, both=args.both, clip=_clip(args),
                              format=_format(args.out), out_fps=args.out_fps, scale=args.scale,
                              model=args.model))
    return _wrote(args.out, videos)


def generate(args: argparse.Namespace) -> int:
    with _client(args) as vdis:
        videos = _waiting(
            f"generating {args.n} {args.sample}s for {args.file}",
            lambda: vdis.generate(args.file, n=args.n, sample=args.sample, seed=args.seed,
                                  clip=_clip(args), format=_format(args.out), out_fps=args.out_fps,
                                  scale=args.scale, model=args.model))
    return _wrote(args.out, videos, f", seed {videos.seed}")


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": serve, "worker": worker, "models": models, "encode": encode, "decode": decode,
    "swap": swap, "generate": generate,
}


# ---------------------------------------------------------------------------------------------
# Helpers


def _client(args: argparse.Namespace) -> Client:
    return Client(args.url, timeout_s=args.timeout, api_key=args.api_key)


def _clip(args: argparse.Namespace) -> ClipOptions:
    return ClipOptions(args.frames, args.start, args.fps, args.fit)


def _read_codes(path: Path) -> Codes:
    """Codes from the .json or .npz that `vdis encode -o` writes."""
    try:
        if path.suffix.lower() == ".npz":
            return Codes.from_npz(path)
        return Codes.from_json(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, KeyError) as error:
        raise SystemExit(f"vdis decode: {path} is not codes from `vdis encode` ({error})"
                         ) from error


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise SystemExit(f"vdis: cannot tell the format from {path.name!r}; end it in "
                         + ", ".join(FORMATS))
    return FORMATS[suffix]


def _wrote(path: Path, videos, extra: str = "") -> int:
    videos.save(path)
    grid = f", grid {videos.grid[0]}x{videos.grid[1]}" if videos.grid else ""
    print(f"{path}: {len(videos.content)} bytes, results {'x'.join(map(str, videos.shape))}"
          f"{grid}{extra}", file=sys.stderr)
    return 0


def _waiting(what: str, call: Callable[[], T]) -> T:
    """Run `call`, showing `what` and the seconds spent on stderr while it runs."""
    done = threading.Event()
    started = time.perf_counter()
    live = sys.stderr.isatty()

    def tick() -> None:
        while not done.wait(0.2):
            print(f"\r{what} ... {time.perf_counter() - started:4.1f} s", end="",
                  file=sys.stderr, flush=True)

    if live:
        threading.Thread(target=tick, daemon=True).start()
    else:
        print(f"{what} ...", file=sys.stderr, flush=True)
    try:
        return call()
    finally:
        done.set()
        if live:
            print(f"\r{what} ... {time.perf_counter() - started:4.1f} s", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
