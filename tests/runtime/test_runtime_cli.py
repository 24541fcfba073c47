"""The `gptoss` command line: run, chat, bench, and one-line errors with exit status 2."""

import json

import pytest
from click.testing import CliRunner

from gptoss.runtime.cli import main
from helpers import FP32, bundle_variant


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return tiny_bundle("cpu", quant=FP32)


def invoke(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


def test_run_streams_an_answer(bundle):
    a = invoke("run", bundle, "Hello!", "--max-new-tokens", 12, "--temperature", 0)
    b = invoke("run", bundle, "Hello!", "--max-new-tokens", 12, "--temperature", 0)
    assert a.exit_code == 0, a.output
    assert a.output == b.output                       # greedy: the same text twice


def test_run_with_seed_is_reproducible(bundle):
    args = ("run", bundle, "Hi", "--max-new-tokens", 10, "--seed", 5, "--show-reasoning",
            "--reasoning-effort", "high")
    first, second = invoke(*args), invoke(*args)
    assert first.exit_code == 0, first.output
    assert first.output == second.output


def test_chat_keeps_history_and_switches_effort(bundle):
    result = invoke("chat", bundle, "--max-new-tokens", 6, "--temperature", 0,
                    input="hello\n/effort high\nagain\n/help\n/exit\n")
    assert result.exit_code == 0, result.output
    assert "reasoning effort: high" in result.output
    assert result.output.count(">>> ") == 5           # one prompt per input line
    assert result.output.count("/effort low|medium|high") == 2      # the banner, then /help


@pytest.mark.parametrize("typed, error", [
    ("/foo", "Error: unknown command '/foo'; the commands: /effort low|medium|high   /reset   /exit"),
    ("/effort extreme", "Error: /effort takes one of low, medium, high, not 'extreme'"),
    ("/effort", "Error: /effort takes one of low, medium, high, not ''"),
])
def test_chat_bad_commands_are_one_line_errors(bundle, typed, error):
    result = invoke("chat", bundle, "--max-new-tokens", 4, "--temperature", 0, "--reasoning-effort", "medium",
                    input=f"{typed}\nhi\n/exit\n")
    assert result.exit_code == 0, result.output
    errors = [line for line in result.output.splitlines() if "Error:" in line]
    assert len(errors) == 1 and errors[0].removeprefix(">>> ").startswith(error), result.output
    assert "reasoning effort:" not in result.output   # a bad /effort changes nothing
    assert result.output.count(">>> ") == 3           # and the chat goes on


def test_chat_overflow_says_how_to_go_on(bundle):
    """A reply that fills the context: one error line that names /reset and --max-new-tokens; the turn is undone,
    and after /reset the chat answers again."""
    result = invoke("chat", bundle, "--max-context", 96, "--max-new-tokens", 200, "--temperature", 0,
                    input="Tell me a long story.\n/reset\n/exit\n")
    assert result.exit_code == 0, result.output
    (error,) = [line for line in result.output.splitlines() if "Error:" in line]
    assert "context overflow" in error and "/reset starts a new conversation" in error
    assert "--max-new-tokens (now 200)" in error and "--max-context" in error
    assert "(conversation cleared)" in result.output


def test_bench_json(bundle):
    result = invoke("bench", bundle, "--prompt-tokens", 16, "--new-tokens", 4, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    for key in ("load_s", "prefill_tok_s", "decode_tok_s", "ttft_s", "peak_rss_mb"):
        assert data[key] > 0, key
    assert data["provider"] == "CPUExecutionProvider"


def test_bench_table(bundle):
    result = invoke("bench", bundle, "--prompt-tokens", 8, "--new-tokens", 3)
    assert result.exit_code == 0, result.output
    assert "decode" in result.output and "tok/s" in result.output and "peak RSS" in result.output


def test_errors_are_one_line_and_exit_2(bundle, tmp_path):
    result = invoke("run", tmp_path, "x")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"Error: {tmp_path}/manifest.json: missing; "
                                                  f"is {tmp_path} a bundle written by gptoss-export?"]
    result = invoke("run", bundle, "x", "--provider", "NopeExecutionProvider")
    assert result.exit_code == 2 and result.output.startswith("Error: execution provider 'NopeExecutionProvider'")
    result = invoke("run", bundle, "x" * 50, "--max-context", 20)
    assert result.exit_code == 2 and result.output.startswith("Error: context overflow")
    result = invoke("run", bundle, "x", "--graph-capture")          # a cpu bundle: nothing to capture
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "graph_capture=True" in result.output and "target.graph_capture" in result.output


def test_bad_manifest_error(bundle, tmp_path):
    bad = bundle_variant(bundle, tmp_path / "bad", lambda d: d.update(format_version=7))
    result = invoke("bench", bad, "--json")
    assert result.exit_code == 2
    assert "format_version" in result.output and len(result.output.strip().splitlines()) == 1
