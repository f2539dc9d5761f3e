"""The ``tuneavideo`` command line: its commands, options and defaults. Imports nothing heavy, so ``--help``
answers at once."""

import argparse

from ..choices import (CLIP_CLAMPS, FRAME_ATTENTION, FUSE_METHODS, GROUP_NORMS, SCORE_CONVENTIONS, SELF_CONTROL,
                       SSIM_CONVENTIONS)

PAPER = dict(size=512, tune_steps=500, steps=50)
SDXL_SIZE = 1024  # SDXL's training size: its default, where SD's is the paper's 512
TINY = dict(size=64, tune_steps=30, steps=20)
OUT_SUFFIXES = (".mp4", ".gif", "")

DESCRIPTION = """Tune-A-Video (one-shot video editing with an image diffusion model) from the shell.

  tuneavideo run    tune on a video, then edit it
  tuneavideo tune   tune on a video and save the tuned weights
  tuneavideo edit   edit a video with saved tuned weights
  tuneavideo score  measure an edit: CLIP frame consistency and text alignment, PSNR/SSIM to the source

With no --model a tiny random model is built (a demo of the machinery: its output is not a real edit);
with no --video a built-in clip is used. 'tuneavideo run --help' lists the options."""


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("input")
    g.add_argument("--model", help="SD 1.x/2.x or SDXL .safetensors checkpoint or diffusers folder (default: tiny random model)")
    g.add_argument("--config", help="diffusers config folder for a single-file checkpoint of an unusual shape "
                                    "(default: the shipped SD1/SD2 configs)")
    g.add_argument("--video", help="mp4/webm/mov/gif/webp file or folder of frames (default: built-in clip)")
    g.add_argument("--prompt", default="a red square moving over a gradient", help="caption of the source video")
    g.add_argument("--frames", type=int, default=8, help="number of frames to use (default 8; the paper: 24)")
    g.add_argument("--stride", type=int, default=1, help="take every N-th frame (default 1)")
    g.add_argument("--start", type=int, default=0, help="first frame to take (default 0)")
    g.add_argument("--width", type=int, help="frame width, a multiple of 8 (default 512, SDXL 1024; 64 with the tiny "
                                             "model)")
    g.add_argument("--height", type=int, help="frame height, a multiple of 8 (default 512, SDXL 1024; 64 with the "
                                              "tiny model)")
    g.add_argument("--seed", type=int, default=0, help="seed of tuning's random draws and of the eta noise (default 0)")
    g.add_argument("--device", help="torch device: cuda, cuda:1, cpu, ... (default: cuda if available, else cpu)")
    g.add_argument("--fp16", action="store_true", help="keep frozen weights in half precision (GPU; tuned tensors stay "
                                                      "fp32); every pass then computes in fp16")
    g.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="no",
                   help="autocast of every UNet pass: tuning, inversion, sampling, editing (default no: fp32)")
    g.add_argument("--memory", choices=["auto", "check", "off"], default="auto",
                   help="before any work, plan every stage's peak memory against the device's free memory; auto "
                        "(default): a stage that would not fit runs with the first of gradient checkpointing, CFG "
                        "halves one after the other, half-precision autocast, frame windows, VAE tiles that fits "
                        "(and a run that cannot fit is refused before it starts); check: refuse instead, saying what "
                        "fits; off: no planning")
    g.add_argument("--prediction-type", choices=["epsilon", "v_prediction"],
                   help="override the model's (SD2 checkpoints default to v_prediction; SD2-base needs epsilon)")
    g.add_argument("--allow-pickle", action="store_true", help="allow .ckpt checkpoints and motion modules (they can run "
                                                               "code: trust the source)")
    g.add_argument("--motion-module", help="an AnimateDiff motion module (mm_sd_v15_v2, v3_sd15_mm, mm_sdxl_v10_beta... "
                                           ".safetensors, .ckpt with --allow-pickle, or a diffusers MotionAdapter "
                                           "folder) as the temporal layers: tuning starts from its motion prior; "
                                           "weights tuned with one edit with the same one")
    g.add_argument("--frame-attention", choices=list(FRAME_ATTENTION),
                   help="what each frame's self-attention looks at: sparse_causal (Tune-A-Video, the default): frame 0 "
                        "and the previous frame; first_frame (Video-P2P's model): frame 0 only; per_frame "
                        "(AnimateDiff's, the default with --motion-module: what its motion prior was trained beside): "
                        "the frame itself. Tuned weights keep theirs (edit reads it from --weights)")
    g.add_argument("--group-norm", choices=list(GROUP_NORMS),
                   help="what the ResNets' GroupNorms take statistics over: clip (Tune-A-Video, the default; AnimateDiff "
                        "v1) or frame (AnimateDiff v2/v3/SDXL: the default with such a --motion-module). Tuned weights "
                        "keep theirs")
    g.add_argument("--weights", default="out/tuned.safetensors",
                   help="tuned weights .safetensors: written by tune/run, read by edit (default out/tuned.safetensors)")

    tuning = argparse.ArgumentParser(add_help=False)
    g = tuning.add_argument_group("tuning")
    g.add_argument("--tune-steps", type=int, help="tuning steps (default 500, the paper's; 30 with the tiny model)")
    g.add_argument("--lr", type=float, default=3e-5, help="AdamW learning rate (default 3e-5, the paper's)")
    g.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute activations in the backward pass: about half the memory, ~1.7x the step time")
    g.add_argument("--frame-window", type=int, help="tune each step on a random run of this many consecutive frames "
                                                    "(bounds memory for long videos; default: all frames)")
    g.add_argument("--posterior", choices=["sample", "mean"], default="sample",
                   help="latents of each step: a fresh VAE posterior sample (default, as the paper) or the mean")
    g.add_argument("--lora-rank", type=int, help="tune LoRA adapters of this rank (4-64 usual) on the layers the paper "
                                                 "tunes, instead of the layers themselves: files of megabytes, less "
                                                 "memory (default: the paper's full tuning)")
    g.add_argument("--lora-alpha", type=float, help="LoRA scale alpha / rank (default alpha = the rank: scale 1)")
    g.add_argument("--checkpoint-every", type=int, default=0,
                   help="save a resumable training state beside --weights every N steps (default 0: never)")
    g.add_argument("--resume", action="store_true", help="continue from the training state saved beside --weights")

    editing = argparse.ArgumentParser(add_help=False)
    g = editing.add_argument_group("editing")
    g.add_argument("--edit-prompt", default="a yellow square moving over a gradient", help="prompt of the edit")
    g.add_argument("--strength", type=float, default=1.0, help="how much of the tuned --weights to apply (full or "
                                                               "LoRA): 0 the base model, 1 as tuned (default), "
                                                               "between: W0 + s (W - W0); edit only")
    g.add_argument("--negative-prompt", default="", help="negative prompt of the guidance (default empty, as the paper)")
    g.add_argument("--steps", type=int, help="DDIM steps of inversion and sampling (default 50; 20 with the tiny model)")
    g.add_argument("--cfg", type=float, help="classifier-free guidance scale (default 12.5, the paper's; 7.5 with --p2p, "
                                           "Video-P2P's)")
    g.add_argument("--eta", type=float, default=0.0, help="DDIM eta from 0 (deterministic, the paper) to 1; noise from --seed")
    g.add_argument("--context-length", type=int, help="edit long clips in overlapping windows of this many frames "
                                                      "(inversion, sampling, null-text, P2P; memory bounded by the "
                                                      "window; each keeps the clip's frame 0 as anchor); default: the "
                                                      "whole clip at once")
    g.add_argument("--context-overlap", type=int, default=4, help="frames shared by neighbouring windows (default 4)")
    g.add_argument("--fuse-method", choices=list(FUSE_METHODS), default="pyramid",
                   help="weights of overlapping windows' frames (default pyramid, as ComfyUI's context windows)")
    g.add_argument("--out", default="out/edit.mp4",
                   help="output: .mp4, .gif, or a path without suffix for a folder of PNG frames (default out/edit.mp4)")
    g.add_argument("--fps", type=int, default=8, help="frames per second of the output video (default 8)")
    g.add_argument("--clip", help="local CLIP model folder: also measure the edit (writes <out>.score.json/.png)")
    g = editing.add_argument_group("prompt-to-prompt (Video-P2P: keep what the edit prompt does not change)")
    g.add_argument("--p2p", action="store_true", help="null-text inversion, then the source and the edit sampled "
                                                     "together with attention control")
    g.add_argument("--inversion", help="null-text inversion file: reused if it exists (same prompt, steps, cfg), "
                                       "else saved there (inversion is the slow part)")
    g.add_argument("--inner-steps", type=int, default=10, help="null-text Adam iterations per step (default 10)")
    g.add_argument("--mode", choices=["auto", "replace", "refine"], default="auto",
                   help="replace: word swap; refine: words added/removed; auto: by word count (default)")
    g.add_argument("--cross-steps", type=float, default=0.2, help="fraction of steps whose cross-attention follows "
                                                                  "the source (default 0.2, Video-P2P's)")
    g.add_argument("--self-steps", type=float, default=0.5, help="fraction of steps whose self-attention is the "
                                                                 "source's (default 0.5)")
    g.add_argument("--reweight", default="", help="scale attention to edit-prompt words, e.g. 'origami:2'")
    g.add_argument("--blend", nargs=2, metavar=("SOURCE_WORDS", "EDIT_WORDS"),
                   help="local blend: comma-separated words of each prompt whose region may change (e.g. rabbit rabbit)")
    g.add_argument("--blend-threshold", type=float, default=0.3, help="local blend mask threshold (default 0.3)")
    g.add_argument("--self-control", choices=list(SELF_CONTROL), default="spatial",
                   help="which self-attention --self-steps controls: spatial (default; Prompt-to-Prompt, the paper: "
                        "the frames' attention at 32x32 and below) or temporal (Video-P2P's code: the temporal "
                        "attention at every resolution)")
    g.add_argument("--fast", action="store_true", help="Video-P2P's --fast: DDIM inversion with the source prompt "
                                                      "instead of null-text inversion, the source branch sampled "
                                                      "without guidance (minutes instead of ~20x the inversion)")

    scoring = argparse.ArgumentParser(add_help=False)
    g = scoring.add_argument_group("scoring")
    g.add_argument("--clip", required=True, help="local CLIP model folder (transformers CLIPModel, e.g. "
                                                 "openai/clip-vit-large-patch14 as downloaded)")
    g.add_argument("--video", required=True, help="the edited video (mp4/gif/webp or a folder of frames)")
    g.add_argument("--prompt", help="the edit prompt: measures text alignment (CLIP score)")
    g.add_argument("--source", help="the source video: measures PSNR/SSIM of the edit to it (read with --stride and "
                                    "--start, as many frames as the edit, resized to the edit's size)")
    g.add_argument("--stride", type=int, default=1, help="the source's frame stride used for the edit (default 1)")
    g.add_argument("--start", type=int, default=0, help="the source's first frame used for the edit (default 0)")
    g.add_argument("--mask", help="image (all frames) or folder/video (one per frame) of the edited region: PSNR/SSIM "
                                  "also inside and outside it (white = inside)")
    g.add_argument("--clip-clamp", choices=list(CLIP_CLAMPS), default="frame",
                   help="text alignment: clamp each frame's CLIP score at 0, then average them (default; the paper "
                        "averages per-frame CLIP scores), or clamp the mean (torchmetrics' CLIPScore over the frames)")
    g.add_argument("--ssim", choices=list(SSIM_CONVENTIONS), default="whole_frame",
                   help="SSIM averaged over the whole frame, borders reflect-padded (default, torchmetrics), or "
                        "without the 5-pixel border (scikit-image)")
    g.add_argument("--windows", nargs=2, type=int, metavar=("LENGTH", "OVERLAP"),
                   help="the frame windows the edit was made in (--context-length, --context-overlap): measures its "
                        "seams, the change at window boundaries against inside (default: from <video>.run.json, which "
                        "'tuneavideo edit' writes; the largest jump is measured anyway)")
    g.add_argument("--scores", choices=list(SCORE_CONVENTIONS), default="paper",
                   help="paper (default): the CLIP numbers as the Tune-A-Video paper computes them; v2vbench: also "
                        "V2VBench's (consistency of the vision tower's pooled output, consecutive frames, clamped at 0, "
                        "0-1; text alignment 100 cos, not clamped)")
    g.add_argument("--out", help="report JSON (default <video>.score.json; the chart goes beside it as .png)")
    g.add_argument("--device", help="torch device (default: cuda if available, else cpu)")

    parser = argparse.ArgumentParser(prog="tuneavideo", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,tune,edit,score}")
    sub.add_parser("run", parents=[common, tuning, editing], help="tune on the video, then edit it")
    sub.add_parser("tune", parents=[common, tuning], help="tune on the video and save --weights")
    sub.add_parser("edit", parents=[common, editing], help="edit the video with tuned --weights")
    sub.add_parser("score", parents=[scoring], help="measure an edited video")
    return parser


def command_defaults(parser: argparse.ArgumentParser, command: str) -> dict:
    """Every option of ``command`` (its destination name) with its default, in the parser's order."""
    sub = parser._subparsers._group_actions[0].choices[command]
    return {a.dest: a.default for a in sub._actions if a.dest != "help"}
