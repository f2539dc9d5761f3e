"""``tuneavideo``'s entry point: read the command, check it, run it; every failure ends in one line (what went wrong
and what to do), never a traceback. The model code (torch, diffusers: seconds to import) is imported only after
the checks that need no model, so ``--help`` and a mistake in a path or a number answer at once."""

import errno
import sys
import warnings
from contextlib import ExitStack

from ..errors import TavError, TavWarning, os_message, summary
from ..files import is_file
from ..options import check_options_act
from . import checks
from .parser import PAPER, TINY, build_parser, command_defaults


def _interrupted(args) -> str:
    """What Ctrl-C leaves: the saved weights or training state, and how to go on."""
    if not checks.tunes(args):
        return "interrupted"
    if getattr(args, "saved_weights", False):
        return (f"interrupted while editing; the tuned weights are saved in {args.weights}: edit with them by "
                f"'tuneavideo edit --weights {args.weights}' and this command's other options")
    state = checks.state_path(args)
    if is_file(state):
        return f"interrupted; the training state is saved in {state}: run the same command with --resume to continue"
    return "interrupted; nothing was saved (--checkpoint-every N makes a tuning run resumable)"


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    defaults = dict(PAPER if getattr(args, "model", None) else TINY)  # (an SDXL model's size is set on inspection)
    with warnings.catch_warnings(), ExitStack() as locks:
        warnings.simplefilter("always", TavWarning)  # each one says something about this run
        warnings.showwarning = _show_warning
        try:
            check_options_act(args, command_defaults(parser, args.command))
            if args.command == "score":
                checks.check_score_args(args, locks)
            else:
                configs = checks.check_args(args, defaults, locks)
            checks.say_loading(args)  # (where the checks did not need the model code)
            # each command's code, once the checks that need none have passed (--help stays light)
            if args.command == "score":
                from .score import score  # torch and CLIP (transformers): no diffusers
                score(args)
            else:
                from .commands import run  # the model code (diffusers: seconds to import)
                run(args, defaults, configs)
        except TavError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except OSError as e:
            print(f"error: {os_message(e)}", file=sys.stderr)
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
