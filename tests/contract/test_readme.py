"""The README, as a new user meets it: its "Try it" commands and its Python snippet run as written.

Both are read from README.md itself (its fenced blocks), so the test breaks when the README drifts. The set-up lines
(creating the venv, fetching the tokenizer's vocabulary) are checked to be there but not run: the tests run inside
that venv with the vocabulary already cached (tests/conftest.py). Every other line runs verbatim, with this venv's
executables, in a fresh folder; the snippet then runs on the bundle those commands wrote.
"""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BIN = Path(sys.executable).parent
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)

# Lines of "Try it" that set up the machine rather than use the project: a pattern each, matched once.
SETUP_LINES = {
    "creates the venv": re.compile(r"^bash \.ci/setup \.venv && \. \.venv/bin/activate$"),
    "points tiktoken at its cache": re.compile(r"^export TIKTOKEN_CACHE_DIR=(\S+) TIKTOKEN_RS_CACHE_DIR=(\S+)$"),
    "fetches the vocabulary": re.compile(r"""^python -c "import tiktoken; tiktoken\.get_encoding\('o200k_base'\)"$"""),
}
RUN_AS_WRITTEN = ("gptoss-export", "gptoss")   # the executables a "Try it" line may call; each from this venv
STEP_TIMEOUT_S = 120


def section(title: str) -> str:
    """The README's text under `## {title}...`, up to the next `## ` heading."""
    match = re.search(rf"^## {re.escape(title)}.*?\n(.*?)(?=^## |\Z)", README.read_text(), re.M | re.S)
    assert match, f"README.md has no section '## {title}'"
    return match.group(1)


def blocks(text: str, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(text) if lang == language]


def try_it_lines() -> list[str]:
    found = blocks(section("Try it"), "bash")
    assert found, "README.md's 'Try it' section has no ```bash block"
    return [line.strip() for line in found[0].splitlines() if line.strip()]


def split_setup(lines: list[str]) -> tuple[dict[str, re.Match], list[str]]:
    """({what a set-up line does: its match}, the lines left to run)."""
    setup, rest = {}, []
    for line in lines:
        hits = [(what, m) for what, pattern in SETUP_LINES.items() if (m := pattern.match(line))]
        if hits:
            what, match = hits[0]
            assert what not in setup, f"'Try it' {what} twice"
            setup[what] = match
        else:
            rest.append(line)
    return setup, rest


def embedding_snippet() -> str:
    found = [b for b in blocks(section("The runtime"), "python") if "Model.load(" in b]
    assert len(found) == 1, "README.md's runtime section should hold one ```python block that loads a Model"
    return found[0]


def test_try_it_sets_up_first():
    setup, rest = split_setup(try_it_lines())
    assert sorted(setup) == sorted(SETUP_LINES), f"'Try it' lacks: {sorted(set(SETUP_LINES) - set(setup))}"
    cache, rs_cache = setup["points tiktoken at its cache"].groups()
    assert cache == rs_cache, "both tiktoken variables should name the same folder"
    assert cache.startswith(("/", "$HOME", "~")), f"the tiktoken cache should be an absolute path, not {cache!r}"
    assert rest and all(shlex.split(line)[0] in RUN_AS_WRITTEN for line in rest), rest


@pytest.fixture(scope="module")
def tried(tmp_path_factory) -> tuple[Path, list[subprocess.CompletedProcess]]:
    """Runs "Try it" (all but its set-up lines) in a fresh folder: (that folder, each command's result)."""
    assert os.environ.get("TIKTOKEN_CACHE_DIR") and os.environ.get("TIKTOKEN_RS_CACHE_DIR"), \
        "the tests need the tokenizer cache (tests/conftest.py)"
    folder = tmp_path_factory.mktemp("readme")
    results = []
    for line in split_setup(try_it_lines())[1]:
        argv = shlex.split(line)
        argv[0] = str(BIN / argv[0])
        done = subprocess.run(argv, cwd=folder, capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
        assert done.returncode == 0, f"README 'Try it': `{line}` exited {done.returncode}:\n{done.stderr[-2000:]}"
        results.append(done)
    return folder, results


def test_try_it_commands_run_and_answer(tried):
    folder, results = tried
    assert (folder / "out" / "bundle" / "manifest.json").is_file()
    answer = results[-1]
    assert answer.args[1] == "run", "'Try it' should end with `gptoss run`"
    assert answer.stdout.strip(), f"`gptoss run` printed no answer (stderr: {answer.stderr[-500:]!r})"


def test_embedding_snippet_runs_and_fits_the_context(tried, monkeypatch, capsys):
    folder, _ = tried
    monkeypatch.chdir(folder)                    # the snippet names "out/bundle", as "Try it" wrote it
    scope: dict = {"__name__": "__readme__"}
    exec(compile(embedding_snippet(), "README.md (the runtime snippet)", "exec"), scope)
    printed = capsys.readouterr().out
    first_turn = printed.split("\n", 1)[0]
    assert first_turn.strip(), "the snippet's streamed first reply printed nothing"

    model, reply = scope["model"], scope["reply"]
    # README: "4096 tokens for the tiny model", and a random model runs every reply to its cap.
    assert model.max_context == 4096
    cap = len(reply.token_ids)
    assert reply.finish_reason == "length" and cap == 512
    assert reply.prompt_tokens + cap <= model.max_context, "the two turns should fit the context"
    # README: "with the default two replies would not fit": the second turn's prompt holds the first reply.
    default = 2048
    assert reply.prompt_tokens - cap + default + default > model.max_context


def test_every_command_is_in_the_readme():
    from gptoss.compile.cli import main as export_cli
    from gptoss.runtime.cli import main as runtime_cli

    text = README.read_text()
    missing = [f"{prog} {name}" for prog, group in (("gptoss-export", export_cli), ("gptoss", runtime_cli))
               for name in group.commands if f"{prog} {name}" not in text]
    assert missing == [], f"README.md never mentions: {missing}"
