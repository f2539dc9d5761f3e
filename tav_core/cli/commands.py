"""The flows of ``tuneavideo run``, ``tune`` and ``edit``: tune, invert and edit; their outputs written (never half,
never lost to a full disk). Imported by ``main`` once the checks that need no model have passed: the model code
(diffusers, seconds to import), which ``score`` (``score.py``) does without."""

import json
import warnings
from dataclasses import replace
from pathlib import Path

import torch

from ..charts import loss_chart
from ..editing.edit import edit, null_text_invert
from ..editing.null_text import NullTextInversion
from ..editing.pipeline import TuneAVideo
from ..errors import TavWarning, os_message, size_text
from ..files import is_file, save_or_fallback
from ..loading.checkpoints import load_components
from ..loading.fingerprint import fingerprint_of
from ..loading.motion import load_motion_module
from ..loading.tiny import tiny_components
from ..loading.tuned import video_parameters
from ..memory.fit import apply_to_pipeline, fit_stage, free_bytes, passes_of, stage_settings
from ..memory.stages import STAGE_NAMES
from ..memory.usage import measured
from ..precision import compute_precision
from ..sampling.windows import ContextWindows, Passes
from ..scoring.clip import ClipEmbedder
from ..tuning.state import remove_state
from ..tuning.tune import TuneConfig
from ..video import demo_video, read_video, write_video
from . import checks
from .score import score_report
from .shared import device_of, save_output, saved_elsewhere, write_png, write_text


def _weights_dtype(args):
    return torch.float16 if args.fp16 else torch.float32


def _video(args, defaults):
    width, height = args.width or defaults["size"], args.height or defaults["size"]
    if args.video:
        return read_video(args.video, args.frames, args.stride, args.start, width, height)
    return demo_video(args.start + args.frames * args.stride, width, height)[args.start::args.stride][:args.frames]


def _load(args, defaults):
    device, dtype = device_of(args), _weights_dtype(args)
    if args.model:
        print(f"loading {args.model}", flush=True)
        components = load_components(args.model, args.prediction_type, args.allow_pickle, args.config)
    else:
        print("no --model given: using a tiny random model (shows the machinery; the output is not a real edit)")
        components = tiny_components(args.seed, args.prediction_type or "epsilon")
    mixed = None if args.fp16 else args.mixed_precision
    motion = load_motion_module(args.motion_module, args.allow_pickle) if args.motion_module else None
    return TuneAVideo(components, device, dtype, getattr(args, "gradient_checkpointing", False), mixed,
                      args.frame_attention, motion, args.group_norm)


def _edit_passes(args):
    windows = None
    if args.context_length:
        windows = ContextWindows(args.context_length, args.context_overlap, args.fuse_method)
    return Passes(windows=windows)


def _reuses_inversion(args) -> bool:
    return bool(args.p2p and args.inversion and Path(args.inversion).is_file())


def _plan(args, configs, defaults) -> dict:
    """Every stage the command runs, planned against the free memory before any of them (before the model loads):
    the settings each runs with (``tav_core.memory.fit``); a stage that cannot fit refuses the whole run here."""
    frames, width, height = args.frames, args.width or defaults["size"], args.height or defaults["size"]
    dtype = _weights_dtype(args)
    mixed = compute_precision(dtype, None if args.fp16 else args.mixed_precision)
    stages = {"encode": {}}
    if checks.tunes(args):
        config = TuneConfig(mixed_precision=mixed, frame_window=args.frame_window)
        stages["tune"] = dict(config=config, gradient_checkpointing=args.gradient_checkpointing)
    if checks.edits(args):
        passes, steps = _edit_passes(args), args.steps or defaults["steps"]
        inversion = ("invert",) if args.fast else ("null_text",) if not _reuses_inversion(args) else ()
        edit_stages = inversion + ("p2p",) if args.p2p else ("invert", "sample")
        stages.update({stage: dict(passes=passes, steps=steps) for stage in edit_stages})
        stages["decode"] = {}
    chosen, as_asked = {}, []
    if args.memory != "off":
        print(f"planning memory: {', '.join(STAGE_NAMES[stage] for stage in stages)}", flush=True)
    for stage, options in stages.items():
        settings = stage_settings(stage, frames, height, width, dtype, mixed, **options)
        chosen[stage], report = fit_stage(configs, stage, settings, device_of(args), args.memory)
        if chosen[stage] != settings:
            print(report)
        elif report:
            as_asked.append(STAGE_NAMES[stage])
    if as_asked:
        print(f"memory: {', '.join(as_asked)} fit as asked ({size_text(free_bytes(device_of(args)))} free)")
    return chosen


def _tune_config(args, defaults):
    return TuneConfig(steps=args.tune_steps or defaults["tune_steps"], learning_rate=args.lr, seed=args.seed,
                      frame_window=args.frame_window, posterior=args.posterior,
                      checkpoint_every=args.checkpoint_every, checkpoint_path=str(checks.state_path(args)),
                      resume=args.resume, clip=_clip_record(args, defaults), lora_rank=args.lora_rank,
                      lora_alpha=args.lora_alpha)


def _clip_record(args, defaults) -> dict:
    """Which frames of which video the latents are: recorded with the weights, compared on resume (by name)."""
    return {"video": str(args.video) if args.video else "built-in clip", "frames": args.frames, "start": args.start,
            "stride": args.stride, "width": args.width or defaults["size"], "height": args.height or defaults["size"]}


def _save_weights(args, pipe, video, config, usage: dict) -> None:
    """Save the tuned weights (with the run's time and memory); if the disk refuses them (full), save them in the
    temp folder and say so: the tuning is never lost to a failed write."""
    save = lambda path: pipe.save_tuned(path, args.prompt, len(video), video.shape[2], video.shape[1], config,
                                        run=usage)
    try:
        where, error = save_or_fallback(save, args.weights)
    except OSError as e:
        state = checks.state_path(args)
        kept = f"; the last training state is {state} (--resume continues from it)" if is_file(state) else ""
        raise OSError(e.errno, f"{e.strerror}: the tuned weights could not be saved{kept}", e.filename) from e
    if error is not None:
        raise saved_elsewhere("tuned weights", args.weights, where, error)
    args.saved_weights = True


def _tune(args, pipe, defaults, latents, latent_std, video, planned) -> dict:
    """Tune, save the weights and the loss curve; returns the tuning's time and memory."""
    state = checks.state_path(args)
    config = pipe.tuned_config(_tune_config(args, defaults), latent_std)
    if planned is not None:
        config = replace(config, mixed_precision=planned.mixed_precision, frame_window=planned.frame_window)
    if args.resume and not is_file(state):
        print(f"no training state at {state}: starting afresh")
    with measured(pipe.device, "tuning") as usage:
        losses = pipe.tune(latents, args.prompt, config, latent_std=latent_std)
    if losses:
        print(f"tuned {config.steps} steps: loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    _save_weights(args, pipe, video, config, usage)
    print(f"tuned weights: {args.weights}")
    if is_file(state):  # this run's own (another run's was refused before any work)
        remove_state(state)
        print(f"removed the training state {state} (the run is complete)")
    if losses:
        try:
            write_png(checks.loss_path(args), loss_chart(losses))
            print(f"loss curve: {checks.loss_path(args)}")
        except OSError as e:
            warnings.warn(f"the loss curve could not be written ({os_message(e)}); the weights are saved", TavWarning)
    return usage


def _p2p(args, pipe, latents, steps, cfg, planned, record: dict):
    if args.fast:  # Video-P2P's fast mode: plain DDIM inversion with the source prompt, no null text
        inverted = pipe.invert(latents, steps, args.prompt, passes=_passes(args, planned, "invert"))
    else:
        inverted = _null_text(args, pipe, latents, steps, cfg, planned, record)
    return edit(pipe, inverted, checks.edit_control(args), cfg, steps, args.negative_prompt, eta=args.eta, seed=args.seed,
                passes=_passes(args, planned, "p2p"))[1]


def _null_text(args, pipe, latents, steps, cfg, planned, record: dict):
    """The null-text inversion of the clip: reused from --inversion if it was made from it, else made (and saved);
    ``record`` takes its time and memory (a reused one's, from its file)."""
    inversion = None
    made_from = _inversion_source(pipe, latents)
    if args.inversion and Path(args.inversion).is_file():
        inversion = NullTextInversion.load(args.inversion)
        inversion.check_made_from(args.inversion, pipe.prompt_used(args.prompt), steps, cfg, tuple(latents.shape),
                                  **made_from)
        print(f"null-text inversion: {args.inversion}")
        record.update(NullTextInversion.read_metadata(args.inversion).get("run") or {})
    if inversion is None:
        with measured(pipe.device, "inversion") as usage:
            inversion = null_text_invert(pipe, latents, args.prompt, steps, cfg, args.inner_steps,
                                         passes=_passes(args, planned, "null_text"))
        record.update(usage)
        if args.inversion:
            try:
                where, error = save_or_fallback(lambda path: inversion.save(path, frames=len(latents), run=usage,
                                                                            **made_from), args.inversion)
            except OSError as e:  # the edit needs it in memory only: it goes on
                warnings.warn(f"the null-text inversion could not be saved ({os_message(e)}); the edit goes on",
                              TavWarning)
            else:
                print(f"null-text inversion saved: {where}" + (f" (not {args.inversion}: {os_message(error)})"
                                                               if error else ""))
    return inversion


def _inversion_source(pipe, latents) -> dict:
    """What a null-text inversion was made from: fingerprints of the clip's latents and of the tuned weights."""
    return {"latents": fingerprint_of([latents]), "weights": fingerprint_of(list(video_parameters(pipe.c.unet).values()))}


def _passes(args, planned: dict, stage: str):
    """A stage's passes: as planned, else as asked (``--memory off``)."""
    return passes_of(planned[stage]) if stage in planned else _edit_passes(args)


def _edit(args, pipe, defaults, latents, planned, record: dict) -> None:
    steps = args.steps or defaults["steps"]
    cfg = args.cfg if args.cfg is not None else (7.5 if args.p2p else 12.5)
    with measured(pipe.device, "edit") as usage:
        if args.p2p:
            edited = _p2p(args, pipe, latents, steps, cfg, planned, record)
        else:
            noise = pipe.invert(latents, steps, passes=_passes(args, planned, "invert"))
            edited = pipe.sample(noise, args.edit_prompt, args.negative_prompt, cfg, steps, args.eta, args.seed,
                                 num_frames=len(latents), passes=_passes(args, planned, "sample"))
    frames = pipe.decode(edited)
    print(f"edited video: {save_output('edited video', args.out, lambda path: write_video(path, frames, args.fps))}")
    windows = (_passes(args, planned, "p2p" if args.p2p else "sample")).windows
    record.update(usage, frames=len(frames),
                  windows=[windows.length, windows.overlap, windows.fuse] if windows is not None else None)
    save_output("run record", checks.run_path(args.out), lambda path: write_text(path, json.dumps(record, indent=1)))
    return frames


def run(args, defaults: dict, configs) -> None:
    """tune, edit or run (both), on the model whose configs the checks read."""
    planned = _plan(args, configs, defaults)
    video = _video(args, defaults)
    pipe = _load(args, defaults)
    for chosen in planned.values():
        apply_to_pipeline(pipe, chosen)
    latents, latent_std = pipe.encode_posterior(video)
    record = {}  # the run's own numbers, beside the edit (tuneavideo score reads them)
    if checks.tunes(args):
        record.update(_tune(args, pipe, defaults, latents, latent_std, video, planned.get("tune")))
    else:
        record.update(pipe.load_tuned(args.weights, args.strength).get("run") or {})
    if checks.edits(args):
        frames = _edit(args, pipe, defaults, latents, planned, record)
        if args.clip:
            score_report(ClipEmbedder(args.clip, pipe.device), frames, args.edit_prompt, video, None,
                         *checks.score_paths(args.out), windows=record.get("windows"),
                         run={k: v for k, v in record.items() if k not in ("windows", "frames")})
