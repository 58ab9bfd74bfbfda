"""Every shell command shown in README.md and docs/*.md runs (at a reduced size) or composes.

Commands are the lines of fenced ```bash / ```sh / ```shell blocks and the ``$ `` lines of
```console blocks (whose other lines are the output they show). Each becomes one test case,
named by page and line. What happens to it:

- ``# not run in tests: <reason>`` at the end of the line: listed, and checked to parse only: a
  ``train.py`` command composes (Hydra, with the first value of each sweep) and passes
  gradprobe's config validation; any other program answers ``--help`` (and a script's
  ``key=value`` arguments compose too).
- a ``train.py`` / ``gradprobe-train`` command in README.md: run for real, at a reduced size
  (``REDUCE``: two training batches of one epoch, ``data=digits`` unless the command picks the
  data; a sweep keeps two values of its first swept key and one of the others).
- a ``train.py`` command in docs/*.md: composed and validated (as above), not run: there are
  many, and composing checks every group, option, key and value it names.
- a ``$ `` command in a console block: run as written (a training command without W&B and
  figures, ``QUIET``); every output line it shows (save lines with an ellipsis) must appear in
  what it prints, and a ``config error:`` line means exit 2.
- anything else (the report, the theory CLI, ``wandb leet inspect``): run as written.

Commands run in one scratch folder (so ``outputs/`` and ``multirun/`` are the ones the
documented runs made); a path like ``outputs/2026-11-26/19-14-35-998987`` stands for the newest
run there and ``multirun/2026-...`` for the newest sweep; ``/tmp/...`` goes into the folder.
Beyond commands: metric keys named in backquotes exist in real runs' metrics.csv or W&B summary,
repository paths and links named exist, and CI runs the README's install and test commands.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from conftest import DATA_DIR, REPO, compose_config
from gradprobe.schema import validate

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL = {"bash", "sh", "shell", "console"}
NOT_RUN = re.compile(r"#\s*not run in tests:\s*(\S.*)$")
PROGRAMS = {"python", "gradprobe-train", "wandb", "pip", "tensorboard"}
# A run at a reduced size: one epoch of two batches, every step logged. Keys the command sets
# itself are left as it sets them.
REDUCE = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.log_every_n_steps=1",
          "trainer.deterministic=true"]
# A console example runs as written, without what it does not print: W&B and figures.
QUIET = ["logger=csv", "gradflow.figures=false"]
RUN_DIR = re.compile(r"outputs/\d{4}-\d\d-\d\d/[\d-]+")
SWEEP_DIR = re.compile(r"multirun/\d{4}-\d\d-\d\d/[\d-]+")
ENV = os.environ | {"GRADPROBE_DATA_DIR": DATA_DIR, "WANDB_MODE": "offline",
                    "WANDB_SILENT": "true", "CI": "true"}


@dataclass(frozen=True)
class Command:
    page: str  # relative to the repository
    line: int
    text: str  # the command, without its comment
    not_run: str | None  # the reason, for a command marked not to run
    output: tuple[str, ...]  # what a console block shows it printing

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.text)

    @property
    def train_args(self) -> list[str] | None:
        """The arguments of a gradprobe training command; None for any other program."""
        argv = self.argv
        if argv[0] == "gradprobe-train":
            return argv[1:]
        if argv[0] == "python" and len(argv) > 1 and argv[1] == "train.py":
            return argv[2:]
        return None


def strip_comment(line: str) -> str:
    """The line up to its first ``#`` that starts a shell comment (outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def extract(page: Path) -> tuple[list[Command], list[str]]:
    """The page's commands, and the lines that look like commands outside a shell fence."""
    rel = str(page.relative_to(REPO))
    commands: list[Command] = []
    stray: list[str] = []
    fence: str | None = None  # the info string's first word while inside a fence
    pending: tuple[int, str] | None = None  # a command continued with a backslash
    lines = page.read_text().splitlines()
    for number, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if stripped.startswith("```"):
            fence = None if fence is not None else (stripped[3:].split() or ["text"])[0]
            continue
        if fence is None:
            continue
        if fence not in SHELL:
            if stripped.startswith("$ "):
                stray.append(f"{rel}:{number}: {stripped}")
            continue
        if pending:
            start, text = pending
            text, pending = text + " " + stripped, None
        elif fence == "console":
            if not stripped.startswith("$ "):
                if commands and commands[-1].page == rel and stripped:
                    last = commands[-1]
                    commands[-1] = Command(last.page, last.line, last.text, last.not_run,
                                           (*last.output, stripped))
                continue
            start, text = number, stripped[2:]
        else:
            if not stripped or stripped.startswith("#"):
                continue
            start, text = number, stripped
        if text.endswith("\\"):
            pending = (start, text[:-1].rstrip())
            continue
        marker = NOT_RUN.search(text)
        commands.append(Command(rel, start, strip_comment(text),
                                marker.group(1).strip() if marker else None, ()))
    return commands, stray


def all_commands() -> list[Command]:
    return [c for page in PAGES for c in extract(page)[0]]


COMMANDS = all_commands()


# --- running ------------------------------------------------------------------------------

class Scratch:
    """The folder the documented commands run in, and what they made there."""

    def __init__(self, root: Path):
        self.root = root
        self.results: dict[str, subprocess.CompletedProcess] = {}
        self.run_dirs: dict[str, list[Path]] = {}  # command id -> the run dirs it made
        self.helps: dict[str, subprocess.CompletedProcess] = {}

    def runs(self) -> list[Path]:
        return sorted(self.root.glob("outputs/*/*/summary.json"), key=os.path.getmtime)

    def sweeps(self) -> list[Path]:
        return sorted((p.parent for p in self.root.glob("multirun/*/*/multirun.yaml")),
                      key=os.path.getmtime)

    def run_list(self) -> list[Path]:
        return [p.parent for p in reversed(self.runs())]

    def fill(self, placeholder: re.Pattern, token: str, candidates: list[Path]) -> str:
        """``token`` with its placeholder replaced by the newest run that has the rest of the
        path (``.../wandb`` needs a run with W&B)."""
        for run_dir in candidates:
            filled = placeholder.sub(str(run_dir.relative_to(self.root)), token)
            if glob.glob(filled, root_dir=self.root):
                return filled
        raise AssertionError(f"no run in {self.root} has {token}")

    def newest_run(self) -> Path:
        if not self.runs():
            self.call([sys.executable, str(REPO / "train.py"), *REDUCE, "data=digits"])
        return self.runs()[-1].parent

    def newest_sweep(self) -> Path:
        if not self.sweeps():
            self.call([sys.executable, str(REPO / "train.py"), "-m", *REDUCE, "data=digits",
                       "seed=0,1"])
        return self.sweeps()[-1]

    def help(self, argv: list[str]) -> subprocess.CompletedProcess:
        """``<entry point> --help``, asked once per entry point."""
        key = shlex.join(argv)
        if key not in self.helps:
            self.helps[key] = self.call(program(argv))
        return self.helps[key]

    def call(self, argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(argv, cwd=self.root, capture_output=True, text=True, env=ENV,
                              timeout=600)

    def localise(self, argv: list[str]) -> list[str]:
        """Placeholders and paths as they are in this folder; the program as installed."""
        out: list[str] = []
        for token in argv:
            if RUN_DIR.search(token):
                token = self.fill(RUN_DIR, token, [self.newest_run(), *self.run_list()])
            if SWEEP_DIR.search(token):
                token = SWEEP_DIR.sub(str(self.newest_sweep().relative_to(self.root)), token)
            if token.startswith("/tmp/"):
                token = str(self.root / token[1:])
            if any(ch in token for ch in "*?") and "=" not in token:
                matches = sorted(glob.glob(token, root_dir=self.root))
                assert matches, f"{token} matches nothing in {self.root}"
                out += matches
                continue
            out.append(token)
        return program(out)

    def run(self, command: Command, argv: list[str]) -> subprocess.CompletedProcess:
        before = set(self.runs()) | {p for s in self.sweeps() for p in s.glob("*/summary.json")}
        result = self.call(self.localise(argv))
        after = set(self.runs()) | {p for s in self.sweeps() for p in s.glob("*/summary.json")}
        self.results[command.id] = result
        self.run_dirs[command.id] = sorted(p.parent for p in after - before)
        return result


def program(argv: list[str]) -> list[str]:
    """The documented program as it is installed here (this interpreter, this checkout)."""
    if argv[0] == "python":
        argv = [sys.executable, *argv[1:]]
        if len(argv) > 1 and (argv[1] in ("train.py", "eval.py") or argv[1].startswith("scripts/")):
            argv[1] = str(REPO / argv[1])
    elif argv[0] == "pip":
        argv = [sys.executable, "-m", "pip", *argv[1:]]
    elif argv[0] == "gradprobe-train" and shutil.which("gradprobe-train") is None:
        argv = [sys.executable, str(REPO / "train.py"), *argv[1:]]
    return argv


@pytest.fixture(scope="session")
def scratch(tmp_path_factory) -> Scratch:
    return Scratch(tmp_path_factory.mktemp("docs"))


FLAGS_WITH_VALUE = {"--cfg", "-c", "--info", "-i", "--package", "-p", "--config-name", "-cn",
                    "--config-path", "-cp", "--config-dir", "-cd"}


def split_overrides(args: list[str]) -> tuple[list[str], list[str]]:
    """Flags (``-m``, ``--cfg``, ...) and Hydra overrides."""
    flags, overrides, takes_value = [], [], False
    for a in args:
        if takes_value or a.startswith("-"):
            flags.append(a)
            takes_value = a in FLAGS_WITH_VALUE
        else:
            overrides.append(a)
    return flags, overrides


def reduce(args: list[str]) -> list[str]:
    """A training command at the reduced size: REDUCE for the keys it leaves alone, digits
    unless it picks the data (or a preset does), and at most two jobs for a sweep."""
    flags, overrides = split_overrides(args)
    parsed = OverridesParser.create().parse_overrides(overrides)
    kept, swept = [], False
    for override, raw in zip(parsed, overrides, strict=True):
        if override.is_sweep_override():
            values = list(override.sweep_string_iterator())[:1 if swept else 2]
            swept = True
            raw = f"{override.get_key_element()}={','.join(values)}"
        kept.append(raw)
    keys = {o.key_or_group for o in parsed}
    extra = [r for r in REDUCE if r.split("=")[0] not in keys]
    if not keys & {"data", "experiment", "resume"}:
        extra.append("data=digits")
    return [*flags, *kept, *extra]


def compose_and_validate(args: list[str]) -> None:
    """Compose a training command's config as the CLI would (the first value of each sweep)
    and run gradprobe's validation on it: every group, option, key and value must exist and be
    allowed. A ``resume=`` is left out: its config comes from the run it names."""
    _, overrides = split_overrides(args)
    first = []
    for override, raw in zip(OverridesParser.create().parse_overrides(overrides), overrides,
                             strict=True):
        if override.key_or_group == "resume":
            continue
        if override.is_sweep_override():
            raw = f"{override.get_key_element()}={next(iter(override.sweep_string_iterator()))}"
        first.append(raw)
    cfg, _ = compose_config(first)
    validate(cfg)


def help_of(argv: list[str]) -> list[str]:
    """The command's entry point asked for ``--help``: ``python script.py``, ``python -m mod``,
    ``wandb sub``, ``pip install``."""
    if argv[0] == "python":
        head = argv[:3] if argv[1] == "-m" else argv[:2]
    else:
        head = [argv[0]]
        for token in argv[1:]:
            if not re.fullmatch(r"[a-z][a-z-]*", token):
                break
            head.append(token)
    return [*head, "--help"]


def shown(result: subprocess.CompletedProcess) -> str:
    """What a command printed, without the logging prefix (``[time][name][LEVEL] - ``)."""
    text = result.stdout + result.stderr
    return re.sub(r"^\[[^\]]*\]\[[^\]]*\]\[[A-Z]+\] - ", "", text, flags=re.M)


def failure(result: subprocess.CompletedProcess, argv: list[str]) -> str:
    printed = (result.stdout + result.stderr)[-3000:]
    return f"exit {result.returncode}: {shlex.join(argv)}\n{printed}"


@pytest.mark.parametrize("command", COMMANDS, ids=[c.id for c in COMMANDS])
def test_command(command: Command, scratch: Scratch):
    argv = command.argv
    assert argv[0] in PROGRAMS, (
        f"{command.id}: `{argv[0]}` is not a program this test knows how to check; teach it, or "
        "keep the command out of shell fences")
    train_args = command.train_args
    if command.not_run:
        if train_args is not None:
            compose_and_validate(train_args)
            return
        result = scratch.help(help_of(argv))
        assert result.returncode == 0, failure(result, help_of(argv))
        if argv[0] == "python" and argv[1].startswith("scripts/"):
            overrides = [a for a in argv[2:] if re.match(r"^[\w./+~-]+=", a)]
            if overrides:
                compose_and_validate(overrides)
        for flag, path in zip(argv, argv[1:], strict=False):  # pip's -c/-r files exist
            if flag in ("-c", "-r"):
                assert (REPO / path).is_file(), f"{command.id}: no {path}"
        return
    if train_args is None or "--help" in argv or "--cfg" in argv:
        result = scratch.run(command, argv)
    elif command.output:  # as shown; only what it does not print is left out
        keys = {a.split("=")[0] for a in train_args}
        result = scratch.run(command, argv + [a for a in QUIET if a.split("=")[0] not in keys])
    elif command.page == "README.md":
        result = scratch.run(command, argv[:2] + reduce(train_args))
    else:
        compose_and_validate(train_args)
        return
    expected_exit = 2 if any(o.startswith("config error:") for o in command.output) else 0
    assert result.returncode == expected_exit, failure(result, argv)
    printed = shown(result)
    for line in command.output:
        if "..." in line or "…" in line:
            continue
        assert line in printed, (
            f"{command.id}: the page shows\n  {line}\nbut it printed\n{printed[-3000:]}")


def test_no_command_outside_a_shell_fence():
    stray = [line for page in PAGES for line in extract(page)[1]]
    assert not stray, ("commands in fences this test does not read (use ```bash or ```console):\n"
                       + "\n".join(stray))


def test_not_run_commands_are_few_and_give_a_reason():
    marked = [c for c in COMMANDS if c.not_run]
    for c in marked:
        print(f"not run: {c.id}: {c.text}  ({c.not_run})")
    assert all(len(c.not_run) > 5 for c in marked)
    assert len(marked) < len(COMMANDS) / 2


def test_ci_runs_the_readme_commands():
    """CI installs as the README says and runs the README's test command."""
    readme = [c for c in COMMANDS if c.page == "README.md"]
    ci = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert any(c.text == "python -m pytest -q" for c in readme)
    assert "python -m pytest -q" in ci
    installs = [c.argv for c in readme if c.argv[:2] == ["pip", "install"]]
    assert installs, "the README shows no install command"
    ci_installs = [shlex.split(line) for line in ci if "pip install" in line]
    normal = [[t for t in ["pip", *argv[argv.index("install"):]] if t != "-q"]
              for argv in ci_installs]
    assert installs[0] in normal, f"README installs with {installs[0]}, CI with {ci_installs}"


# --- names the pages use ------------------------------------------------------------------

KEY = re.compile(r"`((?:grad|weight|backprop|update|act|grad_hist|act_hist|train|val|test|"
                 r"theory|diagnosis|figures)/[^`\s]*)`")
REPO_PATH = re.compile(r"`((?:src|gradprobe|tests|scripts|conf|docs|\.ci)/[\w./-]*)`")
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


def named(pattern: re.Pattern, pages=PAGES) -> list[tuple[str, str]]:
    """(page:line, name) for every match of ``pattern`` outside shell fences."""
    found = []
    for page in pages:
        fence = False
        for number, line in enumerate(page.read_text().splitlines(), 1):
            if line.strip().startswith("```"):
                fence = not fence
                continue
            if not fence:
                found += [(f"{page.relative_to(REPO)}:{number}", m) for m in pattern.findall(line)]
    return found


def key_pattern(name: str) -> re.Pattern:
    """``grad/norm/<layer>``, ``theory/*``, ``update/``: a pattern over real keys."""
    parts = re.split(r"(<[^>]+>|\*|NN)", name)
    regex = "".join({"*": ".*", "NN": r"\d+"}.get(p, "[^/]+" if p.startswith("<") else re.escape(p))
                    for p in parts)
    return re.compile(regex + (".*" if name.endswith("/") else ""))


@pytest.fixture(scope="session")
def logged_keys(scratch: Scratch) -> set[str]:
    """Every key the README's runs logged: metrics.csv headers and W&B summaries."""
    readme_runs = [c for c in COMMANDS if c.page == "README.md" and c.train_args is not None
                   and not c.not_run and "-m" not in c.argv and "--help" not in c.argv]
    for c in readme_runs:
        if c.id not in scratch.results:
            scratch.run(c, c.argv[:2] + reduce(c.train_args))
    keys: set[str] = set()
    for run_dir in (d for c in readme_runs for d in scratch.run_dirs[c.id]):
        keys |= set((run_dir / "metrics.csv").read_text().splitlines()[0].split(","))
        if (run_dir / "wandb").is_dir():
            out = scratch.call(["wandb", "leet", "inspect", "--summary", "--json",
                                str(run_dir / "wandb")])
            keys |= set(json.loads(out.stdout)["summary"])
    assert keys, "the README's runs logged nothing"
    return keys


KEYS = named(KEY)


@pytest.mark.parametrize(("where", "name"), KEYS, ids=[f"{w}:{n}" for w, n in KEYS])
def test_metric_key_is_logged(where: str, name: str, logged_keys: set[str]):
    pattern = key_pattern(name)
    near = sorted(k for k in logged_keys if k.split("/")[0] == name.split("/")[0])
    assert any(pattern.fullmatch(k) for k in logged_keys), (
        f"{where}: `{name}` is not among the keys a run logs; those under its first part: "
        f"{near[:20]}")


INLINE = re.compile(r"`(?:python train\.py|gradprobe-train) ([^`]*)`")
INLINE_COMMANDS = named(INLINE)


@pytest.mark.parametrize(("where", "args"), INLINE_COMMANDS,
                         ids=[f"{w}:{a}" for w, a in INLINE_COMMANDS])
def test_inline_train_command_composes(where: str, args: str):
    """``python train.py ...`` quoted in the text (not in a fence) composes and validates too;
    ``[...]``, ``<...>`` and ``...`` mark a template, not a command."""
    if re.search(r"\.\.\.|<|\[--|…", args):
        pytest.skip("a template, not a command")
    compose_and_validate(shlex.split(args))


def test_repository_paths_exist():
    missing = []
    for where, name in named(REPO_PATH):
        path = name.rstrip("/")
        if not any((base / path).exists() for base in (REPO, REPO / "src")):
            missing.append(f"{where}: {name}")
    assert not missing, "paths the pages name that do not exist:\n" + "\n".join(missing)


def test_links_resolve():
    missing = []
    for page in PAGES:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            for target in LINK.findall(line):
                if "://" not in target and not (page.parent / target).exists():
                    missing.append(f"{page.relative_to(REPO)}:{number}: {target}")
    assert not missing, "links to files that do not exist:\n" + "\n".join(missing)


def test_readme_stays_short():
    lines = len((REPO / "README.md").read_text().splitlines())
    assert lines <= 220, f"README.md has {lines} lines; move reference material to docs/"
