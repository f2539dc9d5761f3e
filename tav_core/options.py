"""Which command-line options act in which command and mode, in one table.

The rule: an option given (set to anything but its default) where it cannot act is refused before any work,
saying why, never silently ignored. The parser already keeps each option to the commands that have it; this table
says, for every option of every command, when inside that command it acts. ``check_options_act`` applies it; a
test walks every option of every command against it.
"""

from argparse import Namespace
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import check


@dataclass(frozen=True)
class Rule:
    acts: Callable[[Namespace], bool]   # whether the option acts in this command and mode
    why_not: str = ""                   # what the refusal says after the option's name: why, and what to do


ALWAYS = Rule(lambda a: True)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")  # single-file checkpoints that are pickles (``models``)


def _tunes(a) -> bool:
    return a.command in ("run", "tune")


def _p2p(a) -> bool:
    return getattr(a, "p2p", False)


def _null_text(a) -> bool:
    return _p2p(a) and not a.fast


def _single_file(a) -> bool:
    return bool(a.model) and not Path(a.model).is_dir()


def _pickle(a) -> bool:
    return any(bool(path) and Path(path).suffix.lower() in PICKLE_SUFFIXES and not Path(path).is_dir()
               for path in (a.model, getattr(a, "motion_module", None)))


P2P_ONLY = Rule(_p2p, "sets a Prompt-to-Prompt edit, which this command does not run: add --p2p, or leave it out")
WINDOWS_ONLY = Rule(lambda a: a.context_length is not None,
                    "sets the frame windows of --context-length, which this command does not give (the whole clip is "
                    "edited at once): add --context-length, or leave it out")

# tune, edit and run: every option of their parsers
RULES: dict[str, Rule] = {
    **dict.fromkeys(("video", "frames", "stride", "start", "width", "height", "device", "fp16", "mixed_precision",
                     "memory", "prediction_type", "frame_attention", "group_norm", "motion_module", "weights",
                     "model"), ALWAYS),
    "config": Rule(_single_file, "gives the configs of a single-file --model, and this command has none (a diffusers "
                                 "folder has its own; the tiny model is built without one): drop it"),
    "allow_pickle": Rule(_pickle, "permits a pickle (.ckpt) --model or --motion-module, and this command's are not "
                                  "one: drop it"),
    "prompt": Rule(lambda a: _tunes(a) or _p2p(a),
                   "is the source video's caption, which a plain edit does not read (DDIM inversion uses the empty "
                   "prompt; the edit's prompt is --edit-prompt): drop it, or add --p2p"),
    "seed": Rule(lambda a: _tunes(a) or a.eta > 0 or not a.model,
                 "seeds tuning and DDIM's eta noise, and this edit has neither (--eta 0 is deterministic): drop it, "
                 "or give --eta"),
    # tuning (tune and run only: the parser)
    **dict.fromkeys(("tune_steps", "lr", "gradient_checkpointing", "frame_window", "posterior", "checkpoint_every",
                     "resume", "lora_rank"), ALWAYS),
    "lora_alpha": Rule(lambda a: a.lora_rank is not None, "sets the scale of LoRA tuning, and this run tunes fully: "
                                                          "add --lora-rank, or leave it out"),
    # editing (edit and run only: the parser)
    **dict.fromkeys(("edit_prompt", "negative_prompt", "steps", "cfg", "eta", "context_length", "out", "clip", "p2p"),
                    ALWAYS),
    "strength": Rule(lambda a: not _tunes(a), "applies saved --weights, and run edits with the weights it tunes, as "
                                              "tuned: tune, then 'tuneavideo edit --strength'"),
    "context_overlap": WINDOWS_ONLY,
    "fuse_method": WINDOWS_ONLY,
    "fps": Rule(lambda a: Path(a.out).suffix != "", "sets a video's frame rate, and --out is a folder of PNG frames, "
                                                   "which has none: drop it, or name --out .mp4 or .gif"),
    **dict.fromkeys(("mode", "cross_steps", "self_steps", "reweight", "blend", "self_control"), P2P_ONLY),
    "blend_threshold": Rule(lambda a: _p2p(a) and a.blend is not None,
                            "sets local blend's mask, and this command gives no --blend: add --blend (and --p2p), or "
                            "leave it out"),
    "fast": Rule(_p2p, "is Video-P2P's fast mode of a --p2p edit; add --p2p, or leave it out"),
    "inversion": Rule(_null_text, "is the null-text inversion of a --p2p edit, and --fast makes no null-text "
                                  "inversion, so there is none to save or reuse: drop --inversion (or --fast; or add "
                                  "--p2p)"),
    "inner_steps": Rule(_null_text, "sets null-text inversion's iterations, which only a --p2p edit without --fast "
                                    "runs: drop it (or --fast; or add --p2p)"),
}

SCORE_RULES: dict[str, Rule] = {
    **dict.fromkeys(("clip", "video", "prompt", "source", "out", "device", "windows", "scores"), ALWAYS),
    "clip_clamp": Rule(lambda a: a.prompt is not None, "sets how text alignment is averaged, and without --prompt "
                                                       "there is none: add --prompt, or leave it out"),
    **dict.fromkeys(("stride", "start", "ssim", "mask"),
                    Rule(lambda a: a.source is not None, "compares the edit with the source video, and this command "
                                                         "gives no --source: add --source, or leave it out")),
}


def rules_of(command: str) -> dict[str, Rule]:
    return SCORE_RULES if command == "score" else RULES


def option_name(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def given(args: Namespace, defaults: dict) -> list[str]:
    """The options set to something else than their default, in the parser's order."""
    return [dest for dest, default in defaults.items() if hasattr(args, dest) and getattr(args, dest) != default]


def check_options_act(args: Namespace, defaults: dict) -> None:
    """Refuse the first option given that cannot act in this command and mode, naming it and why."""
    rules = rules_of(args.command)
    for dest in given(args, defaults):
        rule = rules[dest]
        check(rule.acts(args), f"{option_name(dest)} {rule.why_not}")
