"""The documentation: README.md (the front page) and the pages under docs/.

- every relative link resolves, anchors included;
- every option of the `tuneavideo` CLI that the docs name exists in the CLI's --help;
- the README stays a front page (under 12 KB) and names the test command CI runs.

Plain functions, no fixtures.
"""

import functools
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

from support import ROOT

README = ROOT / "README.md"
README_LIMIT = 12 * 1024  # bytes: the README is the front page; detail lives in docs/
SHELL_FENCES = {"", "bash", "sh", "shell", "console", "shell-session"}


def _doc_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def _name(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------------- markdown

_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")


def _split_fences(text: str):
    """Yield ("prose", lines) and ("code", info, lines) blocks in order."""
    prose: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            prose.append(lines[i])
            i += 1
            continue
        if prose:
            yield ("prose", prose)
            prose = []
        fence, info = m.group(1), m.group(2).lower()
        body = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        yield ("code", info, body)
    if prose:
        yield ("prose", prose)


_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)


def _prose_text(text: str) -> str:
    """The text outside fenced code blocks, with inline code spans blanked (links inside code are not links)."""
    parts = ["\n".join(block[1]) for block in _split_fences(text) if block[0] == "prose"]
    return _CODE_SPAN.sub(lambda m: " " * len(m.group(0)), "\n".join(parts))


def github_anchor(heading: str) -> str:
    """GitHub's anchor for a heading: links and tags reduced to their text, lowercase, every character but
    letters, digits, underscores, hyphens and spaces dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


@functools.lru_cache(maxsize=None)
def anchors_of(path: Path) -> frozenset[str]:
    """Every anchor GitHub makes in a markdown file (repeated headings get -1, -2, ...), plus explicit ids."""
    text = path.read_text(encoding="utf-8")
    seen: dict[str, int] = {}
    found = set()
    for block in _split_fences(text):
        if block[0] != "prose":
            continue
        for line in block[1]:
            m = re.match(r"^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$", line)
            if not m:
                continue
            slug = github_anchor(m.group(1))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
    found.update(re.findall(r"""<[^>]+\b(?:id|name)\s*=\s*["']([^"']+)["']""", text))
    return frozenset(found)


_LINK = re.compile(r"\]\(\s*(?:<([^>]+)>|([^)\s]+))(?:\s+[\"'][^\"']*[\"'])?\s*\)")
_REF_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(?:<([^>]+)>|(\S+))", re.MULTILINE)
_IMG = re.compile(r"""<img\b[^>]*?\bsrc\s*=\s*["']([^"']+)["']""", re.IGNORECASE)


def links_of(path: Path) -> list[str]:
    """Markdown links and images ([..](target), reference definitions) and <img src=...>, outside code."""
    text = _prose_text(path.read_text(encoding="utf-8"))
    targets = [a or b for a, b in _LINK.findall(text)]
    targets += [a or b for a, b in _REF_LINK.findall(text)]
    targets += _IMG.findall(text)
    return targets


def test_every_relative_link_resolves():
    problems = []
    for doc in _doc_files():
        for target in links_of(doc):
            if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("//"):
                continue  # http(s)://, mailto: and other schemes are not checked
            path_part, _, anchor = target.partition("#")
            dest = (doc.parent / unquote(path_part)).resolve() if path_part else doc
            where = f"{_name(doc)}: link ({target})"
            if not dest.exists():
                problems.append(f"{where}: {unquote(path_part)} does not exist (resolved to {dest})")
                continue
            if anchor and dest.suffix == ".md":
                if unquote(anchor).lower() not in anchors_of(dest):
                    problems.append(f"{where}: {_name(dest)} has no heading with the anchor #{anchor} "
                                    f"(its anchors: {', '.join(sorted(anchors_of(dest)))})")
    assert not problems, "broken links in the docs:\n" + "\n".join(problems)


def test_every_docs_page_has_a_title_a_way_back_and_a_link_from_the_readme():
    readme_links = {(README.parent / unquote(t.partition("#")[0])).resolve() for t in links_of(README)}
    problems = []
    for page in _doc_files()[1:]:
        lines = [line for line in page.read_text(encoding="utf-8").split("\n") if line.strip()]
        if not lines or not lines[0].startswith("# "):
            problems.append(f"{_name(page)}: does not start with a '# Title' line")
        back = [t for t in links_of(page) if (page.parent / t.partition("#")[0]).resolve() == README.resolve()]
        if not back:
            problems.append(f"{_name(page)}: has no link back to the README")
        if page.resolve() not in readme_links:
            problems.append(f"{_name(page)}: the README does not link to it")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------------------------- CLI options

def _help(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "tav_core", *args, "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"'tuneavideo {' '.join(args)} --help' failed:\n{out.stderr[-2000:]}"
    return out.stdout


def _options_in_help(text: str) -> set[str]:
    """The long options argparse lists: its entries start two spaces in ('  -h, --help', '  --cfg CFG   ...');
    help sentences that mention another option are indented further and do not count."""
    options = set()
    for line in text.split("\n"):
        m = re.match(r"^  (-\S.*?)(?:\s{2,}|$)", line)
        if m:
            options.update(re.findall(r"--[A-Za-z0-9][\w-]*", m.group(1)))
    return options


@functools.lru_cache(maxsize=None)
def cli_options() -> dict[str, frozenset[str]]:
    """{subcommand: its long options}, subcommands read from the top-level help's usage line ({run,tune,...});
    the key "" holds the top level's own."""
    top = _help()
    usage = re.search(r"usage:.*?\{([\w,-]+)\}", top, re.DOTALL)
    assert usage, f"no {{subcommand,...}} list in the top-level help:\n{top}"
    commands = usage.group(1).split(",")
    options = {"": frozenset(_options_in_help(top))}
    for command in commands:
        options[command] = frozenset(_options_in_help(_help(command)))
    return options


_OPTION = re.compile(r"(?<![\w-])--[A-Za-z][\w-]*")
_SEPARATORS = {"&&", "||", ";", "|"}
TAV = "tuneavideo"


def _walk(tokens: list[str], context, subcommands):
    """Read one command line or code span. Yields ("program", None, owner) where it names a program and
    ("option", option, owner) for each long option; owner is ("tuneavideo", cmds), cmds a tuple of subcommands
    (empty: not said which), or ("other", program). An option before any program takes context as its owner."""
    owner = None
    at_start = True
    expect_command = False
    i = 0
    while i < len(tokens):
        raw = tokens[i]
        token = raw.strip("()[],;:.")
        i += 1
        if raw in _SEPARATORS:
            owner, at_start, expect_command = None, True, False
            continue
        base = token.rsplit("/", 1)[-1]
        if base == TAV:
            owner, at_start, expect_command = (TAV, ()), False, True
            yield "program", None, owner
            continue
        if re.fullmatch(r"python[\d.]*", base):
            module = tokens[i + 1] if i + 1 < len(tokens) and tokens[i] == "-m" else None
            owner = (TAV, ()) if module == "tav_core" else ("other", f"python -m {module}" if module else "python")
            expect_command, at_start = module == "tav_core", False
            i += 2 if module else 0
            yield "program", None, owner
            continue
        if token.startswith("-"):
            for option in _OPTION.findall(raw):
                yield "option", option, owner or context
            at_start = expect_command = False
            continue
        words = token.split("/")
        if (expect_command or (at_start and owner is None)) and all(word in subcommands for word in words):
            owner = (TAV, tuple(words))  # `tuneavideo run ...`, `edit/run` (both), a span starting `run --p2p`
            yield "program", None, owner
        elif at_start and owner is None:
            owner = ("other", token)  # `bash .ci/setup`, `main.py --listen`, `pip install ...`
        at_start = expect_command = False


def named_cli_options(path: Path, subcommands) -> list[tuple[str, tuple[str, ...], str]]:
    """(option, subcommands, where) for every `tuneavideo` option the page names. The rule:

    - Only code is read: fenced code blocks in a shell language (or none) and inline `code spans`; options in
      plain prose are not taken (the docs always write them as code).
    - A code block line (joined over a trailing backslash; `&&`, `;`, `|` start a new command) or a code span is
      read as a command: the options after `tuneavideo <cmd>` (also `.venv/bin/tuneavideo`, `python -m tav_core`,
      a span starting with a subcommand as `run --p2p`, or `edit/run` meaning both) belong to that subcommand and
      must be in its --help; the options after any other program (`python -m bench.run`, `python -m pytest`,
      `pip`, `bash`, ComfyUI's `main.py`, ...) belong to that program and are not checked.
    - A span that starts with an option (`--memory auto`, `--stride/--start`) belongs to the last program named
      earlier in the same paragraph (a paragraph: lines between blank lines; every table row and list item is
      one of its own): not checked if that was another program; otherwise (tuneavideo, or no program named) a
      tuneavideo option, which must be in the --help of at least one subcommand (prose moves between commands).

    So another program's option is never caught when the docs say which program it belongs to, in its span or
    before it in its paragraph; no list of other programs' options is needed.
    """
    found = []
    text = path.read_text(encoding="utf-8")
    for block in _split_fences(text):
        if block[0] == "code":
            _, info, lines = block
            if info not in SHELL_FENCES:
                continue
            command = ""
            for line in lines + [""]:
                line = re.sub(r"(^|\s)#.*$", "", line)  # shell comments
                if line.rstrip().endswith("\\"):
                    command += line.rstrip()[:-1] + " "
                    continue
                command += line
                where = f"{_name(path)}: code block line '{' '.join(command.split())}'"
                for kind, option, owner in _walk(command.split(), (TAV, ()), subcommands):
                    if kind == "option" and owner[0] == TAV:
                        found.append((option, owner[1], where))
                command = ""
            continue
        paragraphs, current = [], []
        for line in block[1]:
            starts_new = re.match(r"^\s*(\||[-*+]\s|\d+\.\s|#{1,6}\s)", line)
            if not line.strip() or starts_new:
                if current:
                    paragraphs.append(current)
                current = [line] if line.strip() else []
            else:
                current.append(line)
        if current:
            paragraphs.append(current)
        for paragraph in paragraphs:
            context = (TAV, ())
            for span in _CODE_SPAN.finditer("\n".join(paragraph)):
                code = " ".join(span.group(2).split())
                for kind, option, owner in list(_walk(code.split(), context, subcommands)):
                    if kind == "option" and owner[0] == TAV:
                        found.append((option, owner[1], f"{_name(path)}: `{code}`"))
                    # the owner of later option-only spans: the last program named (another program only where
                    # the span gives it options, so `tav_core/options.py` or `.ci/setup` name none)
                    if kind == "program" or owner[0] != TAV:
                        context = (TAV, ()) if owner[0] == TAV else owner
    return found


def test_the_option_rule_tells_tuneavideo_from_other_programs():
    """The rule in named_cli_options on made-up text: what it takes and what it leaves."""
    import tempfile
    subcommands = ("run", "tune", "edit", "score")
    text = "\n".join([
        "Start ComfyUI with `python main.py --listen --cpu`; `main.py --port 8189` too.",
        "",
        "| a row | `--fast` |",
        "",
        "`python -m bench.run --sweep` times it; `--compare` too.",
        "",
        "`tav_core/options.py` is the table: `--memory auto`. Then `tuneavideo edit/run --p2p` with `--blend a b`;",
        "`run --cfg 5`; `score --ssim skimage`.",
        "",
        "```bash",
        "bash .ci/setup && .venv/bin/python -m pytest -q tests --deselect x",
        "# a comment --not-an-option",
        ".venv/bin/tuneavideo tune --model m \\",
        "    --frames 24  # comment --not-an-option",
        "pip install --upgrade x | python -m tav_core score --clip c",
        "```",
        "",
        "```python",
        "f(--x)",
        "```",
    ])
    with tempfile.TemporaryDirectory() as folder:
        page = Path(folder) / "page.md"
        page.write_text(text, encoding="utf-8")
        got = [(option, cmds) for option, cmds, _ in named_cli_options(page, subcommands)]
    assert got == [("--fast", ()), ("--memory", ()), ("--p2p", ("edit", "run")), ("--blend", ()),
                   ("--cfg", ("run",)), ("--ssim", ("score",)), ("--model", ("tune",)), ("--frames", ("tune",)),
                   ("--clip", ("score",))], got


def test_every_cli_option_the_docs_name_exists():
    options = cli_options()
    subcommands = tuple(name for name in options if name)
    every = frozenset().union(*options.values())
    named = [item for doc in _doc_files() for item in named_cli_options(doc, subcommands)]
    distinct = {option for option, _, _ in named}
    assert len(distinct) >= 20, f"the rule found too few options to be reading the docs: {sorted(distinct)}"
    problems = []
    for option, cmds, where in named:
        if cmds:
            missing = [cmd for cmd in cmds if option not in options[cmd]]
            if missing:
                problems.append(f"{where}: {option} is not an option of "
                                + ", ".join(f"'tuneavideo {cmd}'" for cmd in missing))
        elif option not in every:
            problems.append(f"{where}: {option} is not an option of any tuneavideo command "
                            f"({', '.join(subcommands)})")
    assert not problems, "the docs name CLI options that --help does not list:\n" + "\n".join(problems)


# --------------------------------------------------------------------------------------------------- README

def test_the_readme_is_a_front_page():
    size = README.stat().st_size
    assert size < README_LIMIT, (f"README.md is {size} bytes, over the front page's {README_LIMIT} (12 KB): "
                                 f"move detail to a page under docs/ and link it")


def test_the_readme_names_the_test_command_ci_runs():
    run = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    commands = [line.strip() for line in run.split("\n") if "pytest" in line and not line.lstrip().startswith("#")]
    assert commands, ".ci/run runs no pytest command"
    readme = README.read_text(encoding="utf-8")
    for command in commands:
        assert command in readme, f"README.md does not show the test command CI runs ({command}, in .ci/run)"
