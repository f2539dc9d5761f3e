"""The options rule: an option given where it cannot act is refused before any work, naming it and why. Every
option of every command is walked against the table (``tav_core.options``) in every mode."""

import argparse

import pytest

from tav_core.cli import main
from tav_core.cli.parser import build_parser, command_defaults
from tav_core.errors import TavError
from tav_core.options import check_options_act, option_name, rules_of

COMMANDS = ("run", "tune", "edit", "score")
# the modes each command runs in: the options that choose them (and what other options' rules look at)
MODES = {
    "tune": [[], ["--model", "sd.safetensors"], ["--model", "sd.ckpt"], ["--model", "."]],
    "edit": [[], ["--p2p"], ["--p2p", "--fast"], ["--p2p", "--blend", "cat", "dog"], ["--context-length", "8"],
             ["--eta", "0.5"], ["--model", "sd.safetensors"], ["--model", "sd.safetensors", "--eta", "0.5"],
             ["--model", "sd.ckpt"], ["--out", "frames"]],
    "score": [[], ["--prompt", "a cat"], ["--source", "src.mp4"]],
}
MODES["run"] = MODES["tune"] + MODES["edit"]
REQUIRED = {"score": ["--clip", "clip", "--video", "edit.mp4"]}


def sub_parser(command: str) -> argparse.ArgumentParser:
    return build_parser()._subparsers._group_actions[0].choices[command]


def other_value(action: argparse.Action) -> list[str]:
    """Arguments that set ``action`` to something else than its default."""
    if isinstance(action, argparse._StoreTrueAction):
        return [action.option_strings[0]]
    if action.choices:
        return [action.option_strings[0], next(c for c in action.choices if c != action.default)]
    if action.nargs == 2:
        return [action.option_strings[0], *(("8", "2") if action.type is int else ("a", "b"))]
    value = str((action.default or 0) + 3) if action.type is int else "0.75" if action.type is float else "other"
    return [action.option_strings[0], value]


def test_the_table_covers_every_option_of_every_command_and_nothing_else():
    parser = build_parser()
    options = {command: set(command_defaults(parser, command)) for command in COMMANDS}
    assert options["tune"] | options["edit"] == options["run"] == set(rules_of("run"))
    assert options["score"] == set(rules_of("score"))


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_in_every_mode_is_refused_exactly_where_the_table_says_it_cannot_act(command):
    parser, sub = build_parser(), sub_parser(command)
    defaults = command_defaults(parser, command)
    refused = accepted = 0
    for mode in MODES[command]:
        for action in sub._actions:
            if action.dest == "help" or action.option_strings[0] in mode or action.dest in ("clip", "video") and \
                    command == "score":
                continue
            args = parser.parse_args([command, *REQUIRED.get(command, []), *mode, *other_value(action)])
            acts = rules_of(command)[action.dest].acts(args)
            try:
                check_options_act(args, defaults)
            except TavError as e:
                assert not acts, f"{command} {mode}: {action.option_strings[0]} was refused where it acts: {e}"
                assert str(e).startswith(option_name(action.dest)), e
                refused += 1
            else:
                assert acts, f"{command} {mode}: {action.option_strings[0]} was taken where it cannot act"
                accepted += 1
    assert refused and accepted  # the walk saw both outcomes


@pytest.mark.parametrize("args, message", [
    (["run", "--context-overlap", "6"], "--context-overlap sets the frame windows of --context-length"),
    (["run", "--context-length", "4", "--context-overlap", "4"],
     "--context-overlap 4 must be less than --context-length 4"),
    (["edit", "--context-length", "4", "--context-overlap", "9"], "must be less than --context-length 4"),
    (["edit", "--p2p", "--fast", "--inner-steps", "3"], "--inner-steps sets null-text inversion's iterations"),
    (["run", "--self-control", "temporal"], "--self-control sets a Prompt-to-Prompt edit"),
    (["edit", "--prompt", "a cat"], "--prompt is the source video's caption, which a plain edit does not read"),
    (["edit", "--out", "{tmp}/frames", "--fps", "12"], "--fps sets a video's frame rate"),
    (["tune", "--allow-pickle"], "--allow-pickle permits a pickle (.ckpt) --model"),
    (["edit", "--p2p", "--blend-threshold", "0.5"], "--blend-threshold sets local blend's mask"),
    (["edit", "--out", "."], "--out . names a folder the command runs in or above"),
    (["run", "--out", ".."], "--out .. names a folder the command runs in or above"),
    (["score", "--clip", "{tmp}", "--video", "{tmp}", "--out", ""], "--out is empty"),
    (["score", "--clip", "{tmp}", "--video", "{tmp}", "--out", "."], "--out . names a folder"),
    (["score", "--clip", "{tmp}", "--video", "{tmp}", "--stride", "2"], "--stride compares the edit with the source"),
])
def test_options_that_cannot_act_are_refused_before_any_work(tmp_path, capsys, no_model, args, message):
    code = main([a.replace("{tmp}", str(tmp_path)) for a in args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
