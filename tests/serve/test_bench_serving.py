"""bench/serving.py on the tiny bundle's live server (--url): one short round per stream count, so the benchmark
the lead runs on a full-width slice is known to work: the prompts have the length asked for, every stream's tokens
are counted, the JSON has each stream count, and the markdown table replaces its earlier copy."""

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "serving.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_serving", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_serving_measures_each_stream_count(bench, live, tmp_path, capsys):
    doc = tmp_path / "serving.md"
    doc.write_text("# Serving\n\n## Throughput\n\nThe command.\n")
    args = ["--url", f"{live.url}/v1", "--streams", "1", "2", "--rounds", "1", "--prompt-tokens", "80",
            "--max-tokens", "4", "--json", str(tmp_path / "out.json"), "--markdown", str(doc)]
    assert bench.main(args) == 0
    result = json.loads((tmp_path / "out.json").read_text())
    assert json.loads(capsys.readouterr().out) == result
    assert result["prompt_tokens_seen"] == [80]
    assert set(result["streams"]) == {"1", "2"}
    for streams, row in result["streams"].items():
        (tokens,) = row["tokens_per_round"]
        assert 0 < tokens <= 4 * int(streams) and row["failed_rounds"] == []
        assert row["aggregate_tok_s"]["n"] == 1 and row["aggregate_tok_s"]["median"] > 0

    assert bench.main(args) == 0                             # a second run replaces the table, not appends it
    text = doc.read_text()
    assert text.startswith("# Serving\n\n## Throughput\n\nThe command.\n\n")
    assert text.count(bench.TABLE_START) == text.count(bench.TABLE_END) == 1
    assert "| 1 | " in text and "| 2 | " in text and "python bench/serving.py --url" in text


def test_bench_serving_needs_a_bundle_or_a_url(bench):
    with pytest.raises(SystemExit):
        bench.parse_args([])
