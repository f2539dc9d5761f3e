"""``tuneavideo``: the paper's workflow from the shell.

Everything that can be checked (numbers, paths, output names, the video, the weights file) is checked before
the model loads, so a mistake costs seconds, not a tuning run; failures end in one line, never a traceback.
torch is imported only after the arguments are read (``--help`` is instant).
"""

import argparse
import errno
import sys
import warnings
from contextlib import ExitStack
from pathlib import Path

from . import preflight as pf
from .choices import CLIP_CLAMPS, FRAME_ATTENTION, FUSE_METHODS, SELF_CONTROL, SSIM_CONVENTIONS
from .errors import TavError, TavWarning, check, summary
from .options import check_options_act


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


def _parser() -> argparse.ArgumentParser:
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
    g.add_argument("--allow-pickle", action="store_true", help="allow .ckpt checkpoints (they can run code: trust the source)")
    g.add_argument("--frame-attention", choices=list(FRAME_ATTENTION),
                   help="what each frame's self-attention looks at: sparse_causal (Tune-A-Video, the default): frame 0 "
                        "and the previous frame; first_frame (Video-P2P's model): frame 0 only. Tuned weights keep "
                        "theirs (edit reads it from --weights)")
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
    g.add_argument("--checkpoint-every", type=int, default=0,
                   help="save a resumable training state beside --weights every N steps (default 0: never)")
    g.add_argument("--resume", action="store_true", help="continue from the training state saved beside --weights")

    editing = argparse.ArgumentParser(add_help=False)
    g = editing.add_argument_group("editing")
    g.add_argument("--edit-prompt", default="a yellow square moving over a gradient", help="prompt of the edit")
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


_tunes, _edits, _state_path, _loss_path = pf.tunes, pf.edits, pf.state_path, pf.loss_path


def command_defaults(parser: argparse.ArgumentParser, command: str) -> dict:
    """Every option of ``command`` (its destination name) with its default, in the parser's order."""
    sub = parser._subparsers._group_actions[0].choices[command]
    return {a.dest: a.default for a in sub._actions if a.dest != "help"}


def _weights_dtype(args):
    import torch
    return torch.float16 if args.fp16 else torch.float32


def _device(args):
    import torch
    return torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))


def _check_args(args, defaults, locks: ExitStack):
    """Every check that needs no model, before anything is loaded or decoded (``tav_core.preflight``); returns the
    model's configs, read from the checkpoint's headers. The outputs are this run's from here on (``locks``)."""
    from .files import check_free_space, check_writable, is_file, output_lock

    pf.check_numbers(args)
    pf.check_device(args.device)
    weights = Path(args.weights)
    check(weights.suffix == ".safetensors", f"--weights {weights} must end in .safetensors")
    inputs = {"--model": args.model, "--config": args.config, "--video": args.video}
    outputs = {}
    if _tunes(args):
        outputs.update({"--weights": weights, "the loss curve": _loss_path(args)})
        check_writable(weights, "tuned weights")
        check_writable(_loss_path(args), "loss curve")
        locks.enter_context(output_lock(weights, "--weights"))  # its training state and loss curve too
        state = _state_path(args)
        if args.checkpoint_every or args.resume:
            check_writable(state, "training state")
            outputs["the training state"] = state
        check(args.resume or not is_file(state),
              f"{state} holds the training state of an interrupted run: continue it with --resume, or delete it to "
              "start afresh (or give another --weights)")
    else:
        inputs["--weights"] = weights
    if _edits(args):
        pf.check_out_named(args.out, "a .mp4 or .gif file, or a new folder for PNG frames")
        suffix = Path(args.out).suffix.lower()
        check(suffix in OUT_SUFFIXES, f"--out {args.out}: cannot write {suffix!r} videos; name it .mp4 or .gif, or "
                                      "give a path without suffix for a folder of PNG frames")
        check_writable(args.out, "output video", folder=not suffix)
        if not suffix:
            from .video import check_frame_folder
            check_frame_folder(args.out)
        outputs["--out"] = args.out
        if args.clip:
            pf.check_clip_folder(args.clip)
            inputs["--clip"] = args.clip
            for path in pf.score_paths(args.out):
                check_writable(path, "score report")
                outputs[f"the score report {path.suffix}"] = path
        if args.p2p:
            _edit_control(args)
            if args.inversion:
                check(Path(args.inversion).suffix == ".safetensors", f"--inversion {args.inversion} must end in "
                                                                     ".safetensors")
                if Path(args.inversion).is_file():
                    from .null_text import NullTextInversion
                    NullTextInversion.read_metadata(args.inversion)
                    inputs["--inversion"] = args.inversion
                else:
                    check_writable(args.inversion, "null-text inversion")
                    outputs["--inversion"] = args.inversion
    pf.check_distinct(outputs, inputs)
    for name in ("--out", "--inversion"):  # (--weights is this run's already)
        if name in outputs:
            locks.enter_context(output_lock(outputs[name], name))
    # the paths are checked: now what needs the model code (diffusers, seconds to import)
    from .models import ModelConfigs, inspect_checkpoint, is_sdxl_unet
    from .weights import check_tuned_file, tuned_frame_attention
    if args.model:
        configs = inspect_checkpoint(args.model, args.allow_pickle, args.config)
        if is_sdxl_unet(configs.unet):
            defaults["size"] = SDXL_SIZE
    else:
        from .tiny import tiny_components
        configs = ModelConfigs.of(tiny_components(args.seed))
    width, height = args.width or defaults["size"], args.height or defaults["size"]
    pf.check_clip_fits_in_memory(args.frames, width, height)
    if not _tunes(args):
        meta = check_tuned_file(weights, args.model, args.config)  # header, base model (checkpoint's header), NaN
        tuned_with = tuned_frame_attention(meta, weights)
        check(args.frame_attention in (None, tuned_with), f"{weights} was tuned with {tuned_with} frame attention, and "
                                                          "edits with it; drop --frame-attention (or tune again with "
                                                          f"{args.frame_attention})")
    else:
        from .stage_memory import tuned_bytes
        size = tuned_bytes(configs)
        check_free_space(weights, size * (4 if args.checkpoint_every else 1) + 2 ** 20, "saving the tuned weights")
    return configs


def _video(args, defaults):
    from .video import demo_video, read_video
    width, height = args.width or defaults["size"], args.height or defaults["size"]
    if args.video:
        return read_video(args.video, args.frames, args.stride, args.start, width, height)
    return demo_video(args.start + args.frames * args.stride, width, height)[args.start::args.stride][:args.frames]


def _load(args, defaults):
    from .pipeline import TuneAVideo
    device, dtype = _device(args), _weights_dtype(args)
    if args.model:
        from .models import load_components
        components = load_components(args.model, args.prediction_type, args.allow_pickle, args.config)
    else:
        from .tiny import tiny_components
        print("no --model given: using a tiny random model (shows the machinery; the output is not a real edit)")
        components = tiny_components(args.seed, args.prediction_type or "epsilon")
    mixed = None if args.fp16 else args.mixed_precision
    return TuneAVideo(components, device, dtype, getattr(args, "gradient_checkpointing", False), mixed,
                      args.frame_attention)


def _edit_passes(args):
    from .windows import ContextWindows, Passes
    windows = None
    if args.context_length:
        windows = ContextWindows(args.context_length, args.context_overlap, args.fuse_method)
    return Passes(windows=windows)


def _reuses_inversion(args) -> bool:
    return bool(args.p2p and args.inversion and Path(args.inversion).is_file())


def _plan(args, configs, defaults) -> dict:
    """Every stage the command runs, planned against the free memory before any of them (before the model loads):
    the settings each runs with (``tav_core.memory_budget``); a stage that cannot fit refuses the whole run here."""
    from .memory_budget import fit_stage, free_bytes, gib, stage_settings
    from .precision import compute_precision
    from .stage_memory import STAGE_NAMES
    from .tuning import TuneConfig
    frames, width, height = args.frames, args.width or defaults["size"], args.height or defaults["size"]
    dtype = _weights_dtype(args)
    mixed = compute_precision(dtype, None if args.fp16 else args.mixed_precision)
    stages = {"encode": {}}
    if _tunes(args):
        config = TuneConfig(mixed_precision=mixed, frame_window=args.frame_window)
        stages["tune"] = dict(config=config, gradient_checkpointing=args.gradient_checkpointing)
    if _edits(args):
        passes, steps = _edit_passes(args), args.steps or defaults["steps"]
        inversion = ("invert",) if args.fast else ("null_text",) if not _reuses_inversion(args) else ()
        edit_stages = inversion + ("p2p",) if args.p2p else ("invert", "sample")
        stages.update({stage: dict(passes=passes, steps=steps) for stage in edit_stages})
        stages["decode"] = {}
    chosen, as_asked = {}, []
    for stage, options in stages.items():
        settings = stage_settings(stage, frames, height, width, dtype, mixed, **options)
        chosen[stage], report = fit_stage(configs, stage, settings, _device(args), args.memory)
        if chosen[stage] != settings:
            print(report)
        elif report:
            as_asked.append(STAGE_NAMES[stage])
    if as_asked:
        print(f"memory: {', '.join(as_asked)} fit as asked ({gib(free_bytes(_device(args)))} free)")
    return chosen


def _tune_config(args, defaults):
    from .tuning import TuneConfig
    return TuneConfig(steps=args.tune_steps or defaults["tune_steps"], learning_rate=args.lr, seed=args.seed,
                      frame_window=args.frame_window, posterior=args.posterior,
                      checkpoint_every=args.checkpoint_every, checkpoint_path=str(_state_path(args)),
                      resume=args.resume, clip=_clip_record(args, defaults))


def _clip_record(args, defaults) -> dict:
    """Which frames of which video the latents are: recorded with the weights, compared on resume (by name)."""
    return {"video": str(args.video) if args.video else "built-in clip", "frames": args.frames, "start": args.start,
            "stride": args.stride, "width": args.width or defaults["size"], "height": args.height or defaults["size"]}


def _saved_elsewhere(what: str, path, where: Path, error: OSError) -> OSError:
    """The error a run ends with when an output went to the temp folder: the disk's reason and where it is."""
    return OSError(error.errno, f"{error.strerror or error}; the {what} {'are' if what.endswith('s') else 'is'} saved "
                                f"in {where} instead: move {'them' if what.endswith('s') else 'it'} to {path} once "
                                "there is room", str(path))


def _save_output(what: str, path, save) -> Path:
    """``save(path)``, or in the temp folder if the disk refuses it; then the run ends saying where it went."""
    from .files import save_or_fallback
    where, error = save_or_fallback(save, path)
    if error is not None:
        raise _saved_elsewhere(what, path, where, error)
    return where


def _save_weights(args, pipe, video, config) -> None:
    """Save the tuned weights; if the disk refuses them (full), save them in the temp folder and say so: the tuning
    is never lost to a failed write."""
    from .files import is_file, save_or_fallback
    save = lambda path: pipe.save_tuned(path, args.prompt, len(video), video.shape[2], video.shape[1], config)
    try:
        where, error = save_or_fallback(save, args.weights)
    except OSError as e:
        state = _state_path(args)
        kept = f"; the last training state is {state} (--resume continues from it)" if is_file(state) else ""
        raise OSError(e.errno, f"{e.strerror}: the tuned weights could not be saved{kept}", e.filename) from e
    if error is not None:
        raise _saved_elsewhere("tuned weights", args.weights, where, error)
    args.saved_weights = True


def _tune(args, pipe, defaults, latents, latent_std, video, planned) -> None:
    from dataclasses import replace

    from .files import is_file
    from .training_state import remove_state
    state = _state_path(args)
    config = pipe.tuned_config(_tune_config(args, defaults), latent_std)
    if planned is not None:
        config = replace(config, mixed_precision=planned.mixed_precision, frame_window=planned.frame_window)
    if args.resume and not is_file(state):
        print(f"no training state at {state}: starting afresh")
    losses = pipe.tune(latents, args.prompt, config, latent_std=latent_std)
    if losses:
        print(f"tuned {config.steps} steps: loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    _save_weights(args, pipe, video, config)
    print(f"tuned weights: {args.weights}")
    if is_file(state):  # this run's own (another run's was refused before any work)
        remove_state(state)
        print(f"removed the training state {state} (the run is complete)")
    if losses:
        from .charts import loss_chart
        try:
            _write_png(_loss_path(args), loss_chart(losses))
            print(f"loss curve: {_loss_path(args)}")
        except OSError as e:
            warnings.warn(f"the loss curve could not be written ({_os_message(e)}); the weights are saved", TavWarning)


def _edit_control(args):
    """The Prompt-to-Prompt settings (checked with CLIP's tokenizer before any model loads)."""
    from .attention_control import AttentionController, EditControl, parse_reweights
    from .models import clip_tokenizer
    blend = tuple([w for w in words.split(",") if w] for words in args.blend) if args.blend else None
    control = EditControl(args.prompt, args.edit_prompt, args.mode, args.cross_steps, args.self_steps,
                          parse_reweights(args.reweight, "--reweight"), blend, args.blend_threshold,
                          self_control=args.self_control, source_cfg=not args.fast)
    AttentionController(control, clip_tokenizer(), 50, 1, (8, 8))
    return control


def _p2p(args, pipe, latents, steps, cfg, planned):
    from .editing import edit
    if args.fast:  # Video-P2P's fast mode: plain DDIM inversion with the source prompt, no null text
        inverted = pipe.invert(latents, steps, args.prompt, passes=_passes(args, planned, "invert"))
    else:
        inverted = _null_text(args, pipe, latents, steps, cfg, planned)
    return edit(pipe, inverted, _edit_control(args), cfg, steps, args.negative_prompt, eta=args.eta, seed=args.seed,
                passes=_passes(args, planned, "p2p"))[1]


def _null_text(args, pipe, latents, steps, cfg, planned):
    """The null-text inversion of the clip: reused from --inversion if it was made from it, else made (and saved)."""
    from .editing import null_text_invert
    from .null_text import NullTextInversion
    inversion = None
    made_from = _inversion_source(pipe, latents)
    if args.inversion and Path(args.inversion).is_file():
        inversion = NullTextInversion.load(args.inversion)
        inversion.check_made_from(args.inversion, pipe.prompt_used(args.prompt), steps, cfg, tuple(latents.shape),
                                  **made_from)
        print(f"null-text inversion: {args.inversion}")
    if inversion is None:
        inversion = null_text_invert(pipe, latents, args.prompt, steps, cfg, args.inner_steps,
                                     passes=_passes(args, planned, "null_text"))
        if args.inversion:
            from .files import save_or_fallback
            try:
                where, error = save_or_fallback(lambda path: inversion.save(path, frames=len(latents), **made_from),
                                                args.inversion)
            except OSError as e:  # the edit needs it in memory only: it goes on
                warnings.warn(f"the null-text inversion could not be saved ({_os_message(e)}); the edit goes on",
                              TavWarning)
            else:
                print(f"null-text inversion saved: {where}" + (f" (not {args.inversion}: {_os_message(error)})"
                                                               if error else ""))
    return inversion


def _inversion_source(pipe, latents) -> dict:
    """What a null-text inversion was made from: fingerprints of the clip's latents and of the tuned weights."""
    from .weights import fingerprint_of, video_parameters
    return {"latents": fingerprint_of([latents]), "weights": fingerprint_of(list(video_parameters(pipe.c.unet).values()))}


def _passes(args, planned: dict, stage: str):
    """A stage's passes: as planned, else as asked (``--memory off``)."""
    from .memory_budget import passes_of
    return passes_of(planned[stage]) if stage in planned else _edit_passes(args)


def _edit(args, pipe, defaults, latents, planned) -> None:
    from .video import write_video
    steps = args.steps or defaults["steps"]
    cfg = args.cfg if args.cfg is not None else (7.5 if args.p2p else 12.5)
    if args.p2p:
        edited = _p2p(args, pipe, latents, steps, cfg, planned)
    else:
        noise = pipe.invert(latents, steps, passes=_passes(args, planned, "invert"))
        edited = pipe.sample(noise, args.edit_prompt, args.negative_prompt, cfg, steps, args.eta, args.seed,
                             num_frames=len(latents), passes=_passes(args, planned, "sample"))
    frames = pipe.decode(edited)
    print(f"edited video: {_save_output('edited video', args.out, lambda path: write_video(path, frames, args.fps))}")
    return frames


def _write_png(path: Path, image) -> None:
    from PIL import Image

    from .files import atomic_path
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def _write_text(path: Path, text: str) -> None:
    from .files import atomic_path
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _report(embedder, frames, prompt, source, mask, out_json: Path, out_png: Path, clip_clamp: str = "frame",
            ssim: str = "whole_frame") -> None:
    """Score frames with a ClipEmbedder; print the table, write the JSON and the chart."""
    from .scoring import chart, score, table, to_json
    text = embedder.text(prompt) if prompt else None
    report = score(embedder.images(frames), text, source, frames if source is not None else None, mask, clip_clamp,
                   ssim)
    print(table(report))
    _save_output("score report", out_json, lambda path: _write_text(path, to_json(report)))
    _save_output("score chart", out_png, lambda path: _write_png(path, chart(report)))
    print(f"score: {out_json}, chart: {out_png}")


def _mask(path, frames):
    """White = inside: one image for all frames, or a video/folder with one mask frame per edited frame."""
    from .video import read_video
    count, height, width = frames.shape[:3]
    masks = read_video(path, width=width, height=height).mean(-1) > 127
    check(len(masks) == 1 or len(masks) >= count, f"--mask {path} has {len(masks)} frames, the edit {count}; give "
                                                  "one image for all frames or one per frame")
    return masks[0] if len(masks) == 1 else masks[:count]


def _score(args) -> None:
    from .clip_embedder import ClipEmbedder
    from .video import read_video
    frames = read_video(args.video)
    source = None
    if args.source:
        source = read_video(args.source, len(frames), args.stride, args.start, frames.shape[2], frames.shape[1])
    mask = _mask(args.mask, frames) if args.mask else None
    embedder = ClipEmbedder(args.clip, _device(args))
    _report(embedder, frames, args.prompt, source, mask, *pf.report_paths(args), args.clip_clamp, args.ssim)


def _check_score_args(args, locks: ExitStack) -> None:
    from .files import check_writable, output_lock
    if args.out is not None:
        pf.check_out_named(args.out, "a .json file name")
    pf.check_clip_folder(args.clip)
    pf.check_device(args.device)
    for name in ("video", "source", "mask"):
        path = getattr(args, name)
        check(path is None or Path(path).exists(), f"--{name} {path} does not exist")
    check(args.stride >= 1 and args.start >= 0, f"--stride must be >= 1 and --start >= 0, got {args.stride}, {args.start}")
    out_json, out_png = pf.report_paths(args)
    check(out_json.suffix == ".json", f"--out {args.out} must end in .json")
    check_writable(out_json, "score report")
    check_writable(out_png, "score chart")
    locks.enter_context(output_lock(out_json, "--out"))  # and the chart beside it
    pf.check_distinct({"the score report": out_json, "the score chart": out_png},
                      {"--clip": args.clip, "--video": args.video, "--source": args.source, "--mask": args.mask})


def _os_message(e: OSError) -> str:
    fixes = {errno.ENOSPC: "free disk space or choose another place", errno.EACCES: "choose a writable place",
             errno.EROFS: "choose a writable place", errno.ENOTDIR: "a part of the path is a file: choose another path",
             errno.ENAMETOOLONG: "choose a shorter name", errno.ENOENT: "check the path"}
    where = f" ({e.filename})" if e.filename else ""
    return f"{e.strerror or e}{where}; {fixes.get(e.errno, 'check the path and the disk')}"


def _interrupted(args) -> str:
    if not _tunes(args):
        return "interrupted"
    if getattr(args, "saved_weights", False):
        return (f"interrupted while editing; the tuned weights are saved in {args.weights}: edit with them by "
                f"'tuneavideo edit --weights {args.weights}' and this command's other options")
    from .files import is_file
    state = _state_path(args)
    if is_file(state):
        return f"interrupted; the training state is saved in {state}: run the same command with --resume to continue"
    return "interrupted; nothing was saved (--checkpoint-every N makes a tuning run resumable)"


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    defaults = dict(PAPER if getattr(args, "model", None) else TINY)  # (an SDXL model's size is set on inspection)
    with warnings.catch_warnings(), ExitStack() as locks:
        warnings.simplefilter("always", TavWarning)  # each one says something about this run
        warnings.showwarning = _show_warning
        try:
            check_options_act(args, command_defaults(parser, args.command))
            if args.command == "score":
                _check_score_args(args, locks)
                _score(args)
                return 0
            configs = _check_args(args, defaults, locks)
            planned = _plan(args, configs, defaults)
            video = _video(args, defaults)
            pipe = _load(args, defaults)
            from .memory_budget import apply_to_pipeline
            for chosen in planned.values():
                apply_to_pipeline(pipe, chosen)
            latents, latent_std = pipe.encode_posterior(video)
            if _tunes(args):
                _tune(args, pipe, defaults, latents, latent_std, video, planned.get("tune"))
            else:
                pipe.load_tuned(args.weights)
            if _edits(args):
                frames = _edit(args, pipe, defaults, latents, planned)
                if args.clip:
                    from .clip_embedder import ClipEmbedder
                    _report(ClipEmbedder(args.clip, pipe.device), frames, args.edit_prompt, video, None,
                            *pf.score_paths(args.out))
        except TavError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except OSError as e:
            print(f"error: {_os_message(e)}", file=sys.stderr)
            return 2 if e.errno == errno.ENAMETOOLONG else 1  # a name too long is the input's fault
        except KeyboardInterrupt:
            print(_interrupted(args), file=sys.stderr)
            return 130
        except MemoryError:
            print("error: out of memory; use fewer frames or a smaller size, or keep --memory auto", file=sys.stderr)
            return 1
        except Exception as e:  # noqa: BLE001  (never a traceback: one line, and what to do with it)
            print(f"error: unexpected failure ({summary(e)}); please report it with the command that caused it",
                  file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
