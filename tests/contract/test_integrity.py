"""A bundle's files against its manifest (gptoss.bundle.integrity, issue 12 items 3 and 4).

Every load: every file the bundle uses (graph parts, what their graphs name: external data and EP context binaries,
weights, the tokenizer's files) is listed under `files`, and every listed file has its listed size; `verify` adds the
sha256. Every path a bundle names stays inside its folder: absolute paths, `..` and symlinks out are refused.

The variants hard-link the shared bundle's files: a test that changes a file writes a new one in its place
(`replace`), never into the linked one.
"""

import hashlib
import json
import os

import onnx
import pytest
from onnx import TensorProto, helper

from gptoss.bundle import BundleError, load_manifest
from gptoss.bundle.integrity import check_files
from gptoss.bundle.onnx_refs import referenced_files
from gptoss.bundle.tokenizer import read_tokenizer_dir
from helpers import FP32, bundle_variant, relist, replace

USED = ("model.onnx", "model.weights", "tokenizer/encoding.json", "tokenizer/o200k_base.tiktoken")


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return tiny_bundle("cpu", quant=FP32)


def open_bundle(folder, verify=False):
    """What a load reads before onnxruntime: the manifest, the files check, the tokenizer folder."""
    manifest = load_manifest(folder)
    check_files(manifest, verify=verify)
    read_tokenizer_dir(manifest.tokenizer_path())
    return manifest


# ------------------------------------------------------------------------------------------------- the listing

def test_the_exported_bundle_passes_both_checks(bundle):
    checked = check_files(load_manifest(bundle), verify=True)
    assert checked.files == len(USED) and checked.hashed
    assert checked.bytes == sum((bundle / f).stat().st_size for f in USED)


@pytest.mark.parametrize("name", USED)
def test_a_used_file_whose_entry_is_deleted_is_refused_by_every_load(bundle, tmp_path, name):
    bad = bundle_variant(bundle, tmp_path / "bad", lambda d: d["files"].pop(name))
    for verify in (False, True):
        with pytest.raises(BundleError, match=f"{name}: used by .* not listed under 'files'"):
            open_bundle(bad, verify=verify)


def test_an_empty_listing_does_not_skip_verification(bundle, tmp_path):
    bad = bundle_variant(bundle, tmp_path / "bad", lambda d: d.update(files={}))
    with pytest.raises(BundleError, match="model.onnx: used by 'graphs.main.parts' but not listed"):
        open_bundle(bad, verify=True)


def test_a_listing_is_required(bundle, tmp_path):
    bad = bundle_variant(bundle, tmp_path / "bad", lambda d: d.pop("files"))
    with pytest.raises(BundleError, match="missing key 'files'"):
        load_manifest(bad)


def test_a_partial_copy_is_refused_by_a_default_load(bundle, tmp_path):
    bad = bundle_variant(bundle, tmp_path / "bad", lambda d: None)
    weights = (bad / "model.weights").read_bytes()
    replace(bad / "model.weights", weights[: len(weights) // 2])
    with pytest.raises(BundleError, match=f"model.weights: {len(weights) // 2} bytes, but .* lists {len(weights)}: "
                                          "a partial copy"):
        open_bundle(bad)


def test_a_missing_listed_file_is_refused(bundle, tmp_path):
    bad = bundle_variant(bundle, tmp_path / "bad", lambda d: None)
    (bad / "tokenizer" / "o200k_base.tiktoken").unlink()
    with pytest.raises(BundleError, match="o200k_base.tiktoken: missing \\(listed under 'files'"):
        open_bundle(bad)


def test_a_flipped_byte_is_found_by_verify_only(bundle, tmp_path):
    bad = bundle_variant(bundle, tmp_path / "bad", lambda d: None)
    weights = bytearray((bad / "model.weights").read_bytes())
    weights[len(weights) // 3] ^= 0x10
    replace(bad / "model.weights", bytes(weights))
    open_bundle(bad)                                         # sizes match: a default load does not read every byte
    with pytest.raises(BundleError, match="model.weights: sha256 [0-9a-f]{64} does not match"):
        open_bundle(bad, verify=True)


@pytest.mark.parametrize("entry, words", [
    ({"bytes": 1}, "must have exactly 'bytes' and 'sha256'"),
    ({"bytes": 1, "sha256": "0" * 64, "md5": ""}, "must have exactly 'bytes' and 'sha256'"),
    ({"bytes": -1, "sha256": "0" * 64}, "'files.model.onnx.bytes' must be >= 0"),
    ({"bytes": "12", "sha256": "0" * 64}, "'files.model.onnx.bytes' must be int"),
    ({"bytes": 1, "sha256": "A" * 64}, "64 lowercase hex digits"),
    ({"bytes": 1, "sha256": "0" * 63}, "64 lowercase hex digits"),
    (None, "'files.model.onnx' must be a JSON object"),
])
def test_a_malformed_entry_is_refused_naming_it(bundle, tmp_path, entry, words):
    bad = bundle_variant(bundle, tmp_path / "bad", lambda d: d["files"].update({"model.onnx": entry}))
    with pytest.raises(BundleError, match="manifest.json") as info:
        load_manifest(bad)
    assert words in str(info.value)


# ---------------------------------------------------------------------------- files a graph names: external data

def relocate(graph_path, location: str, out_path=None) -> None:
    """Point the graph's first external initializer at `location`."""
    model = onnx.load(str(graph_path), load_external_data=False)
    init = next(t for t in model.graph.initializer if t.data_location == TensorProto.EXTERNAL)
    for entry in init.external_data:
        if entry.key == "location":
            entry.value = location
    data = model.SerializeToString()
    replace(out_path or graph_path, data)


def test_external_data_a_graph_names_must_be_listed(bundle, tmp_path):
    bad = bundle_variant(bundle, tmp_path / "bad", lambda d: None)
    os.link(bad / "model.weights", bad / "other.weights")
    relocate(bad / "model.onnx", "other.weights")
    relist(bad, "model.onnx")
    with pytest.raises(BundleError, match="other.weights: used by model.onnx \\(initializer '.*'\\) but not listed"):
        open_bundle(bad)
    relist(bad, "other.weights")
    open_bundle(bad, verify=True)


def test_the_scanner_finds_every_kind_of_external_tensor(tmp_path):
    """Initializers, sparse initializers, Constant-node tensors, subgraphs (If) and functions, against onnx's own
    list of the tensors that use external data."""
    from onnx.external_data_helper import _get_all_tensors, set_external_data, uses_external_data

    def external(name, location):
        t = helper.make_tensor(name, TensorProto.FLOAT, [1], b"\0" * 4, raw=True)
        set_external_data(t, location, offset=0, length=4)
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        return t

    then = helper.make_graph([helper.make_node("Identity", ["t"], ["y"])], "then", [],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [external("t", "b.bin")])
    nodes = [helper.make_node("Constant", [], ["c"], value=external("c", "c.bin")),
             helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=then),
             helper.make_node("F", ["a"], ["z"], domain="local")]
    fn = helper.make_function("local", "F", ["x"], ["y"],
                              [helper.make_node("Constant", [], ["k"], value=external("k", "e.bin")),
                               helper.make_node("Add", ["x", "k"], ["y"])], [helper.make_opsetid("", 21)])
    sparse = helper.make_sparse_tensor(external("s", "d.bin"), helper.make_tensor("i", TensorProto.INT64, [1], [0]),
                                       [4])
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
                              [external("a", "a.bin")], sparse_initializer=[sparse])
    model = helper.make_model(graph, functions=[fn], opset_imports=[helper.make_opsetid("", 21),
                                                                     helper.make_opsetid("local", 1)])
    path = tmp_path / "g.onnx"
    path.write_bytes(model.SerializeToString())
    found = {r.location for r in referenced_files(path)}
    assert found == {"a.bin", "b.bin", "c.bin", "d.bin", "e.bin"}
    oracle = {e.value for t in _get_all_tensors(model) if uses_external_data(t) for e in t.external_data
              if e.key == "location"}
    assert oracle <= found                       # onnx's helper walks fewer places (not functions' nodes)


@pytest.mark.parametrize("cut", [1, 100, -3])
def test_a_truncated_graph_is_one_error(bundle, tmp_path, cut):
    data = (bundle / "model.onnx").read_bytes()
    (tmp_path / "g.onnx").write_bytes(data[:cut])
    with pytest.raises(BundleError, match="g.onnx: not a readable ONNX graph"):
        referenced_files(tmp_path / "g.onnx")


# -------------------------------------------------------------------------- files a graph names: EP context binary

def ep_context_graph(path, cache: str, embed_mode: int = 0) -> None:
    """An ahead-of-time graph as targets/aot.py writes them: one EPContext node naming the provider's binary."""
    node = helper.make_node("EPContext", ["input_ids"], ["logits"], domain="com.microsoft", main_context=1,
                            ep_cache_context=cache.encode(), embed_mode=embed_mode, source="QNNExecutionProvider")
    graph = helper.make_graph([node], "ctx", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, 1])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 1, 8])])
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("com.microsoft", 1)])
                     .SerializeToString())


def aot_like(bundle, folder, cache="model_ctx_qnn.bin", embed_mode=0):
    """The shared bundle's tokenizer around an EP context graph and its binary, listed but for the binary."""
    def edit(d):
        d["graphs"]["main"]["parts"] = ["model_ctx.onnx"]
        d["weights"] = []
        d["files"] = {k: v for k, v in d["files"].items() if k.startswith("tokenizer/")}

    out = bundle_variant(bundle, folder, edit)
    (out / "model.onnx").unlink()
    (out / "model.weights").unlink()
    ep_context_graph(out / "model_ctx.onnx", cache, embed_mode)
    (out / "model_ctx_qnn.bin").write_bytes(b"compiled context" * 64)
    relist(out, "model_ctx.onnx")
    return out


def test_an_ep_context_binary_must_be_listed_and_sized(bundle, tmp_path):
    aot = aot_like(bundle, tmp_path / "aot")
    assert [r.location for r in referenced_files(aot / "model_ctx.onnx")] == ["model_ctx_qnn.bin"]
    with pytest.raises(BundleError, match="model_ctx_qnn.bin: used by model_ctx.onnx \\(EPContext node's "
                                          "ep_cache_context\\) but not listed"):
        check_files(load_manifest(aot))
    relist(aot, "model_ctx_qnn.bin")
    check_files(load_manifest(aot), verify=True)
    replace(aot / "model_ctx_qnn.bin", b"compiled")
    with pytest.raises(BundleError, match="model_ctx_qnn.bin: 8 bytes, but"):
        check_files(load_manifest(aot))


def test_an_embedded_ep_context_names_no_file(tmp_path):
    ep_context_graph(tmp_path / "g.onnx", "\x00binary blob, not a path", embed_mode=1)
    assert referenced_files(tmp_path / "g.onnx") == []


# ------------------------------------------------------------------------------ every path stays in the bundle

@pytest.fixture
def outside(tmp_path):
    """A file and a folder outside the bundle, for links to point at."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.bin").write_bytes(b"x" * 16)
    return tmp_path / "outside"


def _escape(bundle, tmp_path, outside, kind: str, how: str):
    """A variant of the bundle whose path of `kind` escapes by `how` ("absolute", "dotdot", "symlink")."""
    secret = outside / "secret.bin"
    target = {"absolute": str(secret), "dotdot": "../outside/secret.bin", "symlink": "link.bin"}[how]
    folder_target = {"absolute": str(outside), "dotdot": "../outside", "symlink": "linkdir"}[how]
    edits = {
        "graph part": lambda d: d["graphs"]["main"].update(parts=[target]),
        "weights": lambda d: d.update(weights=[target]),
        "tokenizer.dir": lambda d: d["tokenizer"].update(dir=folder_target),
        "files key": lambda d: d["files"].update({target: {"bytes": 16, "sha256": "0" * 64}}),
        "tokenizer.files": lambda d: d["tokenizer"].update(files=[target]),
    }
    b = bundle_variant(bundle, tmp_path / "b", edits.get(kind, lambda d: None))
    os.symlink(secret, b / "link.bin")
    os.symlink(outside, b / "linkdir")
    os.symlink(secret, b / "tokenizer" / "link.bin")
    if kind == "ranks_file":
        spec = json.loads((b / "tokenizer" / "encoding.json").read_text())
        spec["ranks_file"] = {"absolute": str(secret), "dotdot": "../../outside/secret.bin", "symlink": "link.bin"}[how]
        replace(b / "tokenizer" / "encoding.json", json.dumps(spec).encode())
        relist(b, "tokenizer/encoding.json")
    if kind == "external data":
        relocate(b / "model.onnx", target)
        relist(b, "model.onnx")
    if kind == "EP context binary":
        b = aot_like(bundle, tmp_path / "aot", cache=target)
        os.symlink(secret, b / "link.bin")
    return b


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
@pytest.mark.parametrize("kind", ["graph part", "weights", "tokenizer.dir", "files key", "tokenizer.files",
                                  "ranks_file", "external data", "EP context binary"])
def test_no_path_escapes_the_bundle(bundle, tmp_path, outside, kind, how):
    b = _escape(bundle, tmp_path, outside, kind, how)
    with pytest.raises(BundleError, match="must be a plain relative path inside|resolves outside") as info:
        open_bundle(b, verify=True)
    assert "secret.bin" in str(info.value) or "outside" in str(info.value) or "link" in str(info.value)
    assert hashlib.sha256(b"x" * 16).hexdigest() not in str(info.value)    # nothing about the outside file leaks
