"""The runtime under bad input (issue 12 items 3, 6 and 8): one-line errors that name the file, key or argument, never
a traceback from numpy or onnxruntime, and never silent garbage.

    item 3  a load checks the listing and sizes, `verify` the sha256 (Model.load, `gptoss verify`, `--verify`)
    item 6  non-finite logits raise; a temperature too small to divide by is greedy
    item 8  encoding.json's special_tokens as a list, a kv name template, tools and tool calls of the wrong shape,
            top_k=2.5, a manifest that disagrees with its graph, session options unknown or out of range
"""

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from gptoss.bundle import TokenizerError
from gptoss.errors import GptOssError
from gptoss.runtime import BundleError, Model
from gptoss.runtime.cli import main
from gptoss.runtime.errors import ArgumentError, NonFiniteLogitsError
from gptoss.runtime.sampling import SamplingParams, sample
from gptoss.runtime.session import session_options
from helpers import FP32, bundle_variant, relist, replace

USER = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return tiny_bundle("cpu", quant=FP32)


@pytest.fixture(scope="module")
def model(bundle):
    return Model.load(bundle)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result, *words) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------- item 3: bundle integrity

def flipped(bundle, folder):
    bad = bundle_variant(bundle, folder, lambda d: None)
    weights = bytearray((bad / "model.weights").read_bytes())
    weights[len(weights) // 2] ^= 0x01
    replace(bad / "model.weights", bytes(weights))
    return bad


def test_a_default_load_refuses_an_unlisted_file_and_verify_cannot_be_skipped(bundle, tmp_path):
    unlisted = bundle_variant(bundle, tmp_path / "unlisted", lambda d: d["files"].pop("model.weights"))
    with pytest.raises(BundleError, match="model.weights: used by .* not listed under 'files'"):
        Model.load(unlisted)
    empty = bundle_variant(bundle, tmp_path / "empty", lambda d: d.update(files={}))
    with pytest.raises(BundleError, match="not listed under 'files'"):
        Model.load(empty, verify=True)


def test_a_default_load_refuses_a_truncated_file(bundle, tmp_path):
    bad = bundle_variant(bundle, tmp_path / "bad", lambda d: None)
    replace(bad / "model.onnx", (bundle / "model.onnx").read_bytes()[:-100])
    with pytest.raises(BundleError, match="model.onnx: .* bytes, but .* lists .*: a partial copy"):
        Model.load(bad)


def test_verify_hashes_what_a_default_load_only_sizes(bundle, tmp_path):
    bad = flipped(bundle, tmp_path / "bad")
    Model.load(bad)
    with pytest.raises(BundleError, match="model.weights: sha256 .* does not match"):
        Model.load(bad, verify=True)


def test_gptoss_verify(bundle, tmp_path):
    ok = invoke("verify", bundle)
    assert ok.exit_code == 0, ok.output
    size = sum(f.stat().st_size for f in bundle.rglob("*") if f.is_file() and f.name != "manifest.json")
    assert ok.output.strip() == f"{bundle}: 4 files, {size} bytes: sizes and sha256 match its manifest"
    one_line_error(invoke("verify", flipped(bundle, tmp_path / "bad")), "model.weights: sha256")


@pytest.mark.parametrize("command", [("run", "hi"), ("chat",)])
def test_run_and_chat_take_verify(bundle, tmp_path, command):
    bad = flipped(bundle, tmp_path / "bad")
    one_line_error(invoke(command[0], bad, *command[1:], "--verify", "--max-new-tokens", 2), "sha256")


# ----------------------------------------------------------------------------- item 6: no silent garbage at run time

def test_non_finite_logits_raise_instead_of_token_0():
    rng = np.random.default_rng(0)
    for bad in ([np.nan, 1.0, 2.0], [1.0, np.inf, 2.0], [-np.inf, 1.0, 2.0]):
        for params in (SamplingParams(), SamplingParams(temperature=0), SamplingParams(top_k=2, top_p=0.5)):
            with pytest.raises(NonFiniteLogitsError, match="non-finite logits"):
                sample(np.array(bad, np.float32), params, rng)


def test_nan_weights_stop_generation_with_a_clear_error(bundle, tmp_path):
    """A bundle whose final norm holds NaN (listed with its true sha256: verify passes): every logit is NaN."""
    bad = bundle_variant(bundle, tmp_path / "bad", lambda d: None)
    graph = onnx.load(str(bad / "model.onnx"), load_external_data=False)
    norm = next(t for t in graph.graph.initializer if t.name.endswith("final_norm"))
    where = {e.key: int(e.value) for e in norm.external_data if e.key in ("offset", "length")}
    weights = bytearray((bad / "model.weights").read_bytes())
    weights[where["offset"]:where["offset"] + where["length"]] = np.full(where["length"] // 4, np.nan,
                                                                          np.float32).tobytes()
    replace(bad / "model.weights", bytes(weights))
    relist(bad, "model.weights")
    model = Model.load(bad, verify=True)
    for temperature in (0, 1.0):
        with pytest.raises(NonFiniteLogitsError, match="manifest.json: the logits after position 2: the model "
                                                       "returned non-finite logits \\(201088 NaN"):
            list(model.generate([1, 2, 3], max_new_tokens=4, temperature=temperature))
    one_line_error(invoke("run", bad, "hi", "--max-new-tokens", 2), "non-finite logits")


@pytest.mark.parametrize("temperature", [1e-320, 5e-324, 1e-308])
def test_a_temperature_too_small_to_divide_by_is_greedy(model, temperature):
    assert SamplingParams(temperature=1e-320).greedy
    greedy = [e.token_id for e in model.generate("The sea", max_new_tokens=6, temperature=0, stop_tokens=())]
    tiny = [e.token_id for e in model.generate("The sea", max_new_tokens=6, temperature=temperature, stop_tokens=(),
                                                seed=1)]
    assert tiny == greedy and greedy != [0] * 6
    rng = np.random.default_rng(0)
    for logits in ([1.0, 3.0, 2.0], [-1.0, -3.0, -2.0], [0.0, -5.0, -1.0]):
        z = np.array(logits, np.float32)
        assert sample(z, SamplingParams(temperature=temperature), rng) == int(np.argmax(z))


# ------------------------------------------------------------------------------------------ item 8: one-line errors

@pytest.mark.parametrize("kwargs, words", [
    (dict(top_k=2.5), "top_k must be an integer >= 0"),
    (dict(top_k=True), "top_k must be an integer"),
    (dict(temperature="0.7"), "temperature must be a finite number >= 0, got '0.7'"),
    (dict(top_p=float("nan")), "top_p must be a number in (0, 1]"),
    (dict(repetition_penalty=float("inf")), "repetition_penalty must be a finite number > 0"),
    (dict(seed=-1), "seed must be an integer >= 0 or None, got -1"),       # numpy's own words named no seed
    (dict(seed=1.5), "seed must be an integer >= 0 or None, got 1.5"),
])
def test_bad_sampling_settings_are_argument_errors(model, kwargs, words):
    with pytest.raises(ArgumentError) as info:
        list(model.generate("hi", max_new_tokens=2, **kwargs))
    assert words in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, GptOssError)


@pytest.mark.parametrize("command", [("run", "hi"), ("chat",)])
def test_a_negative_seed_on_the_command_line_names_the_option(bundle, command):
    """Click's usage error (status 2, no traceback) that names --seed, where numpy's 'expected non-negative
    integer' used to name nothing."""
    result = invoke(command[0], bundle, *command[1:], "--seed", -1, "--max-new-tokens", 2)
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    (error,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert "'--seed'" in error and "-1" in error and "x>=0" in error, result.output


def test_integer_like_top_k_is_accepted():
    assert SamplingParams(top_k=np.int64(3)).top_k == 3


@pytest.mark.parametrize("call, words", [
    (dict(tools=[{"name": "get_weather", "description": 5}]), "tools[0].description must be a string, got 5"),
    (dict(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
                                                                              "properties": ["city"]}}}]),
     "tools[0].function.parameters.properties must be an object of property schemas"),
    (dict(tools=[{"name": "f", "parameters": {"type": "object", "properties": {"a": {
        "type": "object", "properties": [1]}}}}]), "tools[0].parameters.properties.a.properties must be an object"),
    (dict(tools=[{"description": "no name"}]), "tools[0].name must be a non-empty string, got None"),
    (dict(tools=[{"name": "f", "parameters": "{}"}]), "tools[0].parameters must be an object"),
    (dict(tools={"name": "f"}), "tools must be a list of tools"),
    (dict(messages=USER + [{"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}]),
     "messages[1].tool_calls[0].function.name must be a non-empty string, got None"),
    (dict(messages=USER + [{"role": "assistant", "tool_calls": [{"id": "c1", "name": ""}]}]),
     "messages[1].tool_calls[0].name must be a non-empty string, got ''"),
    (dict(messages=USER + [{"role": "assistant", "tool_calls": ["get_weather"]}]),
     "messages[1].tool_calls[0] must be an object"),
])
def test_malformed_tools_and_tool_calls_are_argument_errors(model, call, words):
    kwargs = {"messages": USER, **call}
    with pytest.raises(ArgumentError) as info:
        model.chat(kwargs.pop("messages"), max_new_tokens=1, **kwargs)
    assert words in str(info.value)


def test_a_well_formed_tool_still_renders(model):
    tool = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                             "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                                                             "any": True},
                                                            "required": ["city"]}}}
    result = model.chat(USER, tools=[tool], max_new_tokens=2, temperature=0)
    assert result.prompt_tokens > 0


def test_special_tokens_as_a_list_is_a_tokenizer_error(bundle, tmp_path):
    bad = bundle_variant(bundle, tmp_path / "bad", lambda d: None)
    spec = json.loads((bad / "tokenizer" / "encoding.json").read_text())
    spec["special_tokens"] = list(spec["special_tokens"])
    replace(bad / "tokenizer" / "encoding.json", json.dumps(spec).encode())
    relist(bad, "tokenizer/encoding.json")
    with pytest.raises(TokenizerError, match="encoding.json: 'special_tokens' must be an object of name -> id"):
        Model.load(bad)


def test_a_kv_name_template_is_refused(bundle, tmp_path):
    """format_version 1 named the cache tensors with templates; version 2 fixes the names (bundle/names.py)."""
    bad = bundle_variant(bundle, tmp_path / "bad",
                         lambda d: d["kv_cache"].update(past_key="past_key.{layer}.{head}"))
    with pytest.raises(BundleError, match="'kv_cache' has \\['past_key'\\], which format_version 2 does not define"):
        Model.load(bad)


@pytest.mark.parametrize("edit, words", [
    (lambda d: d["kv_cache"].update(num_kv_heads=4),
     "past_key.0 has 2 in dimension 1, but .* kv_cache.num_kv_heads = 4"),
    (lambda d: d["kv_cache"].update(head_dim=32), "past_key.0 has 64 in dimension 3, but .* kv_cache.head_dim = 32"),
    (lambda d: d["model"].update(vocab_size=1000), "logits has 201088 in dimension 2, but .* model.vocab_size = 1000"),
])
def test_a_manifest_that_disagrees_with_its_graph_fails_at_load(bundle, tmp_path, edit, words):
    with pytest.raises(BundleError, match=f"model.onnx: {words}"):
        Model.load(bundle_variant(bundle, tmp_path / "bad", edit))


@pytest.mark.parametrize("options, words", [
    ({"intra_op_num_threads": -3}, "'target.session_options.intra_op_num_threads' is -3; expected an integer in "
                                   "[0, 1024]"),
    ({"inter_op_num_threads": 1.5}, "inter_op_num_threads' is 1.5"),
    ({"log_severity_level": 99}, "log_severity_level' is 99"),
    ({"enable_mem_pattern": "yes"}, "enable_mem_pattern' is 'yes'; expected true or false"),
    ({"graph_optimization_level": 7}, "graph_optimization_level' is 7; known: ['ORT_DISABLE_ALL'"),
    ({"execution_mode": "FAST"}, "execution_mode' is 'FAST'"),
    ({"session.bogus": "1"}, "'target.session_options.session.bogus' is not a session config entry this runtime "
                             "knows"),
    ({"ep.context_enable": "1", "ep.context_file_path": "/tmp/x.onnx"}, "ep.context_enable' is not a session config"),
    ({"session.disable_cpu_ep_fallback": "2"}, "disable_cpu_ep_fallback' is '2'; expected one of ['0', '1']"),
    ({"config_entries": {"session.intra_op.allow_spinning": "maybe"}},
     "'target.session_options.config_entries.session.intra_op.allow_spinning' is 'maybe'"),
    ({"config_entries": ["x"]}, "config_entries' must be an object"),
    ({"optimized_model_filepath": "/tmp/x.onnx"}, "optimized_model_filepath' is not a session option"),
])
def test_bad_session_options_are_refused(bundle, tmp_path, options, words):
    bad = bundle_variant(bundle, tmp_path / "bad", lambda d: d["target"].update(session_options=options))
    with pytest.raises(BundleError) as info:
        Model.load(bad)
    assert words in str(info.value)


def test_known_session_options_are_applied(bundle, tmp_path):
    options = {"graph_optimization_level": "ORT_ENABLE_EXTENDED", "execution_mode": 0, "intra_op_num_threads": 2,
               "enable_mem_pattern": False, "session.disable_cpu_ep_fallback": "1",
               "config_entries": {"session.intra_op.allow_spinning": 0}}
    good = bundle_variant(bundle, tmp_path / "good", lambda d: d["target"].update(session_options=options))
    from gptoss.bundle import load_manifest

    so = session_options(load_manifest(good), None)
    assert so.intra_op_num_threads == 2 and so.enable_mem_pattern is False
    assert so.get_session_config_entry("session.disable_cpu_ep_fallback") == "1"
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert Model.load(good).provider == "CPUExecutionProvider"    # the CPU asked for lifts the no-fallback entry
