"""Every check of a command that needs no model, run before anything is loaded or decoded, so that a mistake costs
seconds, not a tuning run: numbers and their sensible ranges, the device, output paths (never one of the inputs,
never a folder of someone else's files), and the files read (headers and metadata only: tuned weights, null-text
inversions, training states, the checkpoint, a CLIP folder)."""

import json
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from ..errors import check, in_range, size_text
from ..files import check_free_space, check_writable, is_file, output_lock
from ..memory.host import cpu_free_bytes
from .parser import OUT_SUFFIXES, SDXL_SIZE

MAX_SEED = 2 ** 64 - 1  # torch's generators take an unsigned 64-bit seed


def tunes(args) -> bool:
    return args.command in ("run", "tune")


def edits(args) -> bool:
    return args.command in ("run", "edit")


def state_path(args) -> Path:
    return Path(args.weights).with_suffix(".state.safetensors")


def loss_path(args) -> Path:
    return Path(args.weights).with_suffix(".loss.png")


def score_paths(out) -> tuple[Path, Path]:
    """Report JSON and chart PNG beside an output (``edit.mp4`` -> ``edit.score.json``, ``edit.score.png``)."""
    base = Path(out)
    base = base.with_suffix("") if base.suffix else base
    return base.with_name(base.name + ".score.json"), base.with_name(base.name + ".score.png")


def run_path(out) -> Path:
    """The run record beside an edit (``edit.mp4`` -> ``edit.run.json``): its windows, time and memory."""
    base = Path(out)
    base = base.with_suffix("") if base.suffix else base
    return base.with_name(base.name + ".run.json")


def report_paths(args) -> tuple[Path, Path]:
    """Where ``score`` writes: --out (and the chart beside it) or beside the video."""
    return (Path(args.out), Path(args.out).with_suffix(".png")) if args.out else score_paths(args.video)


def check_numbers(args) -> None:
    check(args.frames >= 1, f"--frames must be at least 1, got {args.frames}")
    check(args.stride >= 1 and args.start >= 0, f"--stride must be >= 1 and --start >= 0, got {args.stride}, {args.start}")
    for name in ("width", "height"):
        v = getattr(args, name)
        check(v is None or (v > 0 and v % 8 == 0), f"--{name} {v} is not a positive multiple of 8 (the VAE works on "
                                                   f"8x8 pixel cells); use e.g. {max(8, abs(v or 0) // 8 * 8)}")
    check(0 <= args.seed <= MAX_SEED, f"--seed must be a whole number from 0 to {MAX_SEED}, got {args.seed}")
    check(not args.fp16 or args.mixed_precision in ("no", "fp16"), f"--fp16 weights compute in fp16, not "
                                                                   f"{args.mixed_precision}: drop one of the two")
    if tunes(args):
        check(args.tune_steps is None or args.tune_steps >= 1, f"--tune-steps must be at least 1, got {args.tune_steps}")
        in_range("--lr", args.lr, 1e-10, 1.0, " (the paper's 3e-5; above 1e-3 tuning diverges)")
        check(args.checkpoint_every >= 0, f"--checkpoint-every must be >= 0, got {args.checkpoint_every}")
        check(args.frame_window is None or args.frame_window >= 1, f"--frame-window must be at least 1, got {args.frame_window}")
        check(args.lora_rank is None or 1 <= args.lora_rank <= 1024,
              f"--lora-rank must be a whole number from 1 to 1024, got {args.lora_rank} (4 to 64 is usual)")
        in_range("--lora-alpha", args.lora_alpha, 1e-6, 1e6, " (the usual choice is the rank)")
    if not edits(args):
        return
    check(args.steps is None or 1 <= args.steps <= 999, f"--steps must be from 1 to 999, got {args.steps}")
    in_range("--cfg", args.cfg, 0, 100, " (the paper's 12.5; Video-P2P's 7.5)")
    in_range("--strength", args.strength, -10, 10, " (0: the base model, 1: as tuned)")
    in_range("--eta", args.eta, 0, 1)
    check(1 <= args.fps <= 240, f"--fps must be from 1 to 240, got {args.fps}")
    check(args.inner_steps >= 1, f"--inner-steps must be at least 1, got {args.inner_steps}")
    check(args.context_length is None or args.context_length >= 2,
          f"--context-length must be at least 2 frames, got {args.context_length}")
    check(args.context_overlap >= 0, f"--context-overlap must be >= 0, got {args.context_overlap}")
    check(args.context_length is None or args.context_overlap < args.context_length,
          f"--context-overlap {args.context_overlap} must be less than --context-length {args.context_length} (windows "
          "that share every frame never move on)")
    for name in ("cross_steps", "self_steps", "blend_threshold"):
        in_range(f"--{name.replace('_', '-')}", getattr(args, name), 0, 1)


def check_out_named(out: str, what: str) -> None:
    """An --out that names a file or folder of its own: not empty, not ``.``/``..`` or a root (the folder it would
    replace is where the command runs or above it)."""
    check(bool(out.strip()), f"--out is empty; give {what}")
    check(Path(out).name not in ("", ".", ".."), f"--out {out} names a folder the command runs in or above, not an "
                                                 f"output of its own; give {what}")


def check_device(name: str | None) -> None:
    """A device torch knows and this machine has."""
    if name is None:
        return
    import torch  # (seconds to import) only when a device is named
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        check(False, f"--device {name!r} is not a device name; use cpu, cuda or cuda:N")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        check(count > 0, f"--device {name}: this machine has no CUDA GPU that torch can use; use --device cpu")
        check(device.index is None or device.index < count,
              f"--device {name}: this machine has {count} CUDA GPU(s) (cuda:0 to cuda:{count - 1})")
    elif device.type == "mps":
        check(torch.backends.mps.is_available(), f"--device {name}: Apple's MPS is not available here; use cpu")
    else:
        check(device.type == "cpu", f"--device {name}: only cpu, cuda and mps devices are supported")


def _resolved(path) -> Path:
    return Path(path).expanduser().resolve()


def _overlaps(output: Path, source: Path) -> bool:
    """Writing ``output`` would touch ``source``: the same file (links resolved), or one inside the other."""
    return output == source or source in output.parents or output in source.parents


def check_distinct(outputs: dict[str, str | Path], inputs: dict[str, str | Path]) -> None:
    """No output is one of the inputs (or inside an input folder, or a folder holding an input), nor another output."""
    ins = {name: _resolved(p) for name, p in inputs.items() if p}
    outs = {name: _resolved(p) for name, p in outputs.items() if p}
    for name, out in outs.items():
        for source_name, source in ins.items():
            check(not _overlaps(out, source), f"{name} {outputs[name]} would overwrite {source_name} "
                                              f"{inputs[source_name]}, one of this command's inputs: choose another "
                                              "path")
        for other, path in outs.items():
            check(other == name or out != path, f"{name} and {other} are the same file {outputs[name]}: give each "
                                                "its own path")


def check_clip_folder(folder) -> None:
    """A local CLIP model folder: config.json of a CLIP model and its weights (read only later, when scoring)."""
    folder = Path(folder)
    check(folder.is_dir() and (folder / "config.json").is_file(),
          f"--clip {folder} is not a CLIP model folder (no config.json); give a local transformers CLIPModel folder "
          "(e.g. openai/clip-vit-large-patch14 as downloaded)")
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        config = None
    check(isinstance(config, dict) and config.get("model_type") == "clip",
          f"--clip {folder}/config.json is not a CLIP model's (model_type {config.get('model_type') if isinstance(config, dict) else None!r}); "
          "give a transformers CLIPModel folder")
    weights = [folder / n for n in ("model.safetensors", "pytorch_model.bin")]
    check(any(w.is_file() for w in weights), f"--clip {folder} has no model.safetensors or pytorch_model.bin: the "
                                             "folder is incomplete")


def check_clip_fits_in_memory(frames: int, width: int, height: int) -> None:
    """The decoded clip (uint8 frames) must fit in the memory available, before anything is decoded."""
    needed, free = frames * width * height * 3 * 2, cpu_free_bytes()  # decoded frames and their resized copies
    check(needed <= free, f"{frames} frames of {width}x{height} take {size_text(needed)} as decoded frames and only "
                          f"{size_text(free)} of memory are free: use fewer frames (--frames) or a smaller size")


def check_args(args, defaults, locks: ExitStack):
    """Every check that needs no model, before anything is loaded or decoded (``tav_core.cli.checks``); returns the
    model's configs, read from the checkpoint's headers. The outputs are this run's from here on (``locks``)."""
    check_numbers(args)
    check_device(args.device)
    weights = Path(args.weights)
    check(weights.suffix == ".safetensors", f"--weights {weights} must end in .safetensors")
    inputs = {"--model": args.model, "--config": args.config, "--video": args.video}
    outputs = {}
    if tunes(args):
        outputs.update({"--weights": weights, "the loss curve": loss_path(args)})
        check_writable(weights, "tuned weights")
        check_writable(loss_path(args), "loss curve")
        locks.enter_context(output_lock(weights, "--weights"))  # its training state and loss curve too
        state = state_path(args)
        if args.checkpoint_every or args.resume:
            check_writable(state, "training state")
            outputs["the training state"] = state
        check(args.resume or not is_file(state),
              f"{state} holds the training state of an interrupted run: continue it with --resume, or delete it to "
              "start afresh (or give another --weights)")
    else:
        inputs["--weights"] = weights
    if edits(args):
        check_out_named(args.out, "a .mp4 or .gif file, or a new folder for PNG frames")
        suffix = Path(args.out).suffix.lower()
        check(suffix in OUT_SUFFIXES, f"--out {args.out}: cannot write {suffix!r} videos; name it .mp4 or .gif, or "
                                      "give a path without suffix for a folder of PNG frames")
        check_writable(args.out, "output video", folder=not suffix)
        if not suffix:
            from ..video import check_frame_folder  # (av, numpy: a tenth of a second) only for a frame folder
            check_frame_folder(args.out)
        outputs["--out"] = args.out
        if args.clip:
            check_clip_folder(args.clip)
            inputs["--clip"] = args.clip
            for path in score_paths(args.out):
                check_writable(path, "score report")
                outputs[f"the score report {path.suffix}"] = path
        if args.p2p:
            edit_control(args)
            if args.inversion:
                check(Path(args.inversion).suffix == ".safetensors", f"--inversion {args.inversion} must end in "
                                                                     ".safetensors")
                if Path(args.inversion).is_file():
                    from ..editing.null_text import NullTextInversion  # torch, only to read a given inversion
                    NullTextInversion.read_metadata(args.inversion)
                    inputs["--inversion"] = args.inversion
                else:
                    check_writable(args.inversion, "null-text inversion")
                    outputs["--inversion"] = args.inversion
    check_distinct(outputs, inputs)
    for name in ("--out", "--inversion"):  # (--weights is this run's already)
        if name in outputs:
            locks.enter_context(output_lock(outputs[name], name))
    return _check_model(args, defaults, weights)


def say_loading(args) -> None:
    """The command's first line, once what needs no model code is checked: importing it takes seconds."""
    if not getattr(args, "said_loading", False):
        code = "torch, CLIP" if args.command == "score" else "torch, diffusers"  # (score needs no diffusers)
        print(f"{args.command}: arguments and paths checked; loading the model code ({code})", flush=True)
        args.said_loading = True


def _check_model(args, defaults, weights: Path):
    """The checkpoint (its headers), the clip's memory, the tuned weights or the room to save them."""
    say_loading(args)  # the paths are checked: now what needs the model code (diffusers, seconds to import)
    from ..loading.checkpoints import inspect_checkpoint
    from ..loading.configs import ModelConfigs
    from ..loading.tiny import tiny_components
    from ..loading.fingerprint import same_base
    from ..loading.motion import file_motion_config
    from ..loading.tuned import check_tuned_file, tuned_frame_attention, tuned_group_norm
    from ..memory.stages import tuned_bytes
    from ..model.conditioning import is_sdxl_unet
    if args.model:
        configs = inspect_checkpoint(args.model, args.allow_pickle, args.config)
        if is_sdxl_unet(configs.unet):
            defaults["size"] = SDXL_SIZE
    else:
        configs = ModelConfigs.of(tiny_components(args.seed))
    if args.motion_module:  # (its header: whether it is a motion module, its version and architecture)
        configs = replace(configs, motion=file_motion_config(args.motion_module, args.allow_pickle))
    width, height = args.width or defaults["size"], args.height or defaults["size"]
    check_clip_fits_in_memory(args.frames, width, height)
    if configs.motion is not None:
        check_motion_frames(args, configs.motion["max_frames"])
    if not tunes(args):
        meta = check_tuned_file(weights, args.model, args.config)  # header, base model (checkpoint's header), NaN
        for option, tuned_with, what in (("--frame-attention", tuned_frame_attention(meta, weights), "frame attention"),
                                         ("--group-norm", tuned_group_norm(meta, weights), "group norm")):
            given = getattr(args, option[2:].replace("-", "_"))
            check(given in (None, tuned_with), f"{weights} was tuned with {tuned_with} {what}, and edits with it; "
                                               f"drop {option} (or tune again with {given})")
        motion = meta.get("motion_version")
        check(bool(motion) == bool(args.motion_module),
              f"{weights} was tuned with an AnimateDiff motion module ({motion}): give it with --motion-module" if motion
              else f"{weights} was tuned without a motion module: drop --motion-module (or tune again with it)")
        if motion:
            check(same_base(meta["motion_fingerprint"], configs.motion["fingerprint"]),
                  f"{weights} was tuned with another motion module ({motion}) than --motion-module {args.motion_module} "
                  f"({configs.motion['version']}); give the module it was tuned with")
    else:
        size = tuned_bytes(configs)
        check_free_space(weights, size * (4 if args.checkpoint_every else 1) + 2 ** 20, "saving the tuned weights")
    return configs


def check_motion_frames(args, encoded: int) -> None:
    """A motion module encodes at most ``encoded`` frames a pass: the clip, or the windows it runs in, must fit."""
    if tunes(args):
        frames = args.frame_window or args.frames
        check(frames <= encoded, f"--motion-module encodes at most {encoded} frames and tuning would pass {frames}: "
                                 f"tune on runs of at most {encoded} frames (--frame-window {min(16, encoded)})")
    if edits(args):
        frames = args.context_length or args.frames
        check(frames <= encoded, f"--motion-module encodes at most {encoded} frames and the edit would pass {frames}: "
                                 f"edit in frame windows of at most {encoded} (--context-length {min(16, encoded)})")


def edit_control(args):
    """The Prompt-to-Prompt settings (checked with CLIP's tokenizer before any model loads)."""
    # torch and CLIP's tokenizer, only for a Prompt-to-Prompt edit
    from ..editing.attention_control import AttentionController, EditControl, parse_reweights
    from ..loading.configs import clip_tokenizer
    blend = tuple([w for w in words.split(",") if w] for words in args.blend) if args.blend else None
    control = EditControl(args.prompt, args.edit_prompt, args.mode, args.cross_steps, args.self_steps,
                          parse_reweights(args.reweight, "--reweight"), blend, args.blend_threshold,
                          self_control=args.self_control, source_cfg=not args.fast)
    AttentionController(control, clip_tokenizer(), 50, 1, (8, 8))
    return control


def check_score_args(args, locks: ExitStack) -> None:
    if args.out is not None:
        check_out_named(args.out, "a .json file name")
    check_clip_folder(args.clip)
    check_device(args.device)
    if args.windows is not None:
        length, overlap = args.windows
        check(length >= 1 and 0 <= overlap < length, f"--windows {length} {overlap}: the length must be at least 1 "
                                                     "and the overlap from 0 to one less than the length (the edit's "
                                                     "--context-length and --context-overlap)")
    for name in ("video", "source", "mask"):
        path = getattr(args, name)
        check(path is None or Path(path).exists(), f"--{name} {path} does not exist")
    check(args.stride >= 1 and args.start >= 0, f"--stride must be >= 1 and --start >= 0, got {args.stride}, {args.start}")
    out_json, out_png = report_paths(args)
    check(out_json.suffix == ".json", f"--out {args.out} must end in .json")
    check_writable(out_json, "score report")
    check_writable(out_png, "score chart")
    locks.enter_context(output_lock(out_json, "--out"))  # and the chart beside it
    check_distinct({"the score report": out_json, "the score chart": out_png},
                      {"--clip": args.clip, "--video": args.video, "--source": args.source, "--mask": args.mask})
