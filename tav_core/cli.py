"""``tuneavideo``: the paper's workflow from the shell. ``run`` = tune + edit; ``tune`` and ``edit`` apart.

With no ``--model`` a tiny random model is built (a demo of the machinery: its output is not a real edit);
with no ``--video`` a built-in clip is used.
"""

import argparse
import sys
from pathlib import Path

import torch

from .errors import TavError
from .pipeline import TuneAVideo
from .tuning import TuneConfig
from .video import demo_video, read_video, write_video

PAPER = dict(size=512, tune_steps=500, steps=50)
TINY = dict(size=64, tune_steps=30, steps=20)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("input")
    g.add_argument("--model", help="SD 1.x/2.x .safetensors checkpoint or diffusers folder (default: tiny random model)")
    g.add_argument("--video", help="mp4/gif/webp file or folder of frames (default: built-in clip)")
    g.add_argument("--prompt", default="a red square moving over a gradient", help="caption of the source video")
    g.add_argument("--frames", type=int, default=8, help="number of frames to use")
    g.add_argument("--stride", type=int, default=1, help="take every N-th frame")
    g.add_argument("--start", type=int, default=0, help="first frame to take")
    g.add_argument("--width", type=int, help="frame width, a multiple of 8 (default 512; 64 with the tiny model)")
    g.add_argument("--height", type=int, help="frame height, a multiple of 8 (default 512; 64 with the tiny model)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    g.add_argument("--fp16", action="store_true", help="run frozen weights in half precision (GPU)")
    g.add_argument("--prediction-type", choices=["epsilon", "v_prediction"], help="override the model's")
    g.add_argument("--allow-pickle", action="store_true", help="allow .ckpt checkpoints (can run code: trust it)")
    g.add_argument("--weights", help="tuned weights .safetensors: written by tune/run, read by edit")

    tuning = argparse.ArgumentParser(add_help=False)
    g = tuning.add_argument_group("tuning")
    g.add_argument("--tune-steps", type=int, help="tuning steps (default 500; 30 with the tiny model)")
    g.add_argument("--lr", type=float, default=3e-5)
    g.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="no")
    g.add_argument("--gradient-checkpointing", action="store_true")
    g.add_argument("--checkpoint-every", type=int, default=0, help="save a resumable state every N steps")
    g.add_argument("--resume", action="store_true", help="continue from the state saved beside --weights")

    editing = argparse.ArgumentParser(add_help=False)
    g = editing.add_argument_group("editing")
    g.add_argument("--edit-prompt", default="a yellow square moving over a gradient", help="prompt of the edit")
    g.add_argument("--negative-prompt", default="")
    g.add_argument("--steps", type=int, help="DDIM steps for inversion and sampling (default 50; 20 tiny)")
    g.add_argument("--cfg", type=float, default=12.5, help="classifier-free guidance scale")
    g.add_argument("--eta", type=float, default=0.0)
    g.add_argument("--out", default="out/edit.mp4", help="output video, .mp4 or .gif")
    g.add_argument("--fps", type=int, default=8)

    parser = argparse.ArgumentParser(prog="tuneavideo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", parents=[common, tuning, editing], help="tune on the video, then edit it")
    sub.add_parser("tune", parents=[common, tuning], help="tune on the video and save --weights")
    sub.add_parser("edit", parents=[common, editing], help="edit the video with tuned --weights")
    return parser


def _load(args) -> tuple[TuneAVideo, dict]:
    dtype = torch.float16 if args.fp16 else torch.float32
    if args.model:
        from .models import load_components
        components, defaults = load_components(args.model, args.prediction_type, args.allow_pickle), PAPER
    else:
        from .tiny import tiny_components
        print("no --model given: using a tiny random model (shows the machinery; the output is not a real edit)")
        components, defaults = tiny_components(args.seed, args.prediction_type or "epsilon"), TINY
    return TuneAVideo(components, args.device, dtype, getattr(args, "gradient_checkpointing", False)), defaults


def _video(args, defaults):
    width, height = args.width or defaults["size"], args.height or defaults["size"]
    if args.video:
        return read_video(args.video, args.frames, args.stride, args.start, width, height)
    if args.frames < 1:
        raise TavError(f"frame count must be at least 1, got {args.frames}")
    return demo_video(args.frames, width, height)


def _tune(args, pipe, defaults, latents, latent_std, video):
    weights = Path(args.weights or "out/tuned.safetensors")
    config = TuneConfig(steps=args.tune_steps or defaults["tune_steps"], learning_rate=args.lr, seed=args.seed,
                        mixed_precision=args.mixed_precision, checkpoint_every=args.checkpoint_every,
                        checkpoint_path=str(weights.with_suffix(".state.safetensors")), resume=args.resume)
    config = pipe.tuned_config(config, latent_std)
    losses = pipe.tune(latents, args.prompt, config, latent_std=latent_std)
    if losses:
        print(f"tuned {len(losses)} steps: loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    pipe.save_tuned(weights, args.prompt, len(video), video.shape[2], video.shape[1], config)
    print(f"tuned weights: {weights}")


def _edit(args, pipe, defaults, latents):
    steps = args.steps or defaults["steps"]
    noise = pipe.invert(latents, steps)
    edited = pipe.sample(noise, args.edit_prompt, args.negative_prompt, args.cfg, steps, args.eta, args.seed,
                         num_frames=len(latents))
    out = write_video(args.out, pipe.decode(edited), args.fps)
    print(f"edited video: {out}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        pipe, defaults = _load(args)
        video = _video(args, defaults)
        latents, latent_std = pipe.encode_posterior(video)
        if args.command in ("run", "tune"):
            _tune(args, pipe, defaults, latents, latent_std, video)
        if args.command == "edit":
            if not args.weights:
                raise TavError("edit needs --weights, the file written by 'tuneavideo tune'")
            pipe.load_tuned(args.weights)
        if args.command in ("run", "edit"):
            _edit(args, pipe, defaults, latents)
    except TavError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
