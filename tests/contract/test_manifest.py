"""The bundle contract as code (gptoss.bundle): the manifest round-trips, refuses unknown versions and malformed
keys with a message naming the key, keeps paths inside the bundle, and the KV contract checks itself."""

import json
import os

import pytest

from gptoss.bundle import (FORMAT_VERSION, BundleError, Dynamic, KVContract, Manifest, Static, keep_for,
                           load_manifest)
from gptoss.bundle.files import confined
from helpers import FP32, bundle_variant


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return tiny_bundle("cpu", quant=FP32)


def doc_of(bundle) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def test_round_trip_is_exact(bundle):
    doc = doc_of(bundle)
    manifest = Manifest.from_json(doc, bundle / "manifest.json")
    assert manifest.to_json() == doc
    assert manifest.format_version == FORMAT_VERSION == 2


@pytest.mark.parametrize("version", [1, 3, 99])
def test_an_unknown_format_version_is_refused_with_what_to_do(bundle, tmp_path, version):
    bad = bundle_variant(bundle, tmp_path / "bad", lambda d: d.update(format_version=version))
    with pytest.raises(BundleError, match=f"'format_version' {version} is not supported.*reads format_version 2"
                                          ".*re-export"):
        load_manifest(bad)


@pytest.mark.parametrize("edit, words", [
    (lambda d: d.update(format="onnx"), "'format' is 'onnx'"),
    (lambda d: d.pop("kv_cache"), "missing key 'kv_cache'"),
    (lambda d: d["kv_cache"].update(num_kv_heads="2"), "'kv_cache.num_kv_heads' must be int"),
    (lambda d: d["kv_cache"].update(window=[8, 0, True, 0]), "must hold integers"),
    (lambda d: d["kv_cache"].update(mode="paged"), "mode is 'paged'"),
    (lambda d: d["kv_cache"].update(capacity=[4, None, 16, None]), "capacity 4 does not fit window 8"),
    (lambda d: d.update(shapes={"kind": "static", "chunk": 8, "context": 64}), "does not go with 'static' shapes"),
    (lambda d: d.update(shapes={"kind": "ragged"}), "'shapes.kind' is 'ragged'"),
    (lambda d: d["graphs"].update(decode={"parts": ["model.onnx"], "tokens": 1}), "shapes do not use"),
    (lambda d: d["graphs"]["main"].update(parts=[]), "'graphs.main.parts' is empty"),
    (lambda d: d["graphs"]["main"].update(tokens=8), "'graphs.main.tokens' is 8"),
    (lambda d: d.update(logits="some"), "'logits' is 'some'"),
    (lambda d: d.update(weights=["/etc/passwd"]), "plain relative path"),
    (lambda d: d["tokenizer"].update(dir="../tokenizer"), "plain relative path"),
    (lambda d: d.update(model=[]), "'model' must be dict"),
])
def test_a_malformed_manifest_names_the_key(bundle, tmp_path, edit, words):
    bad = bundle_variant(bundle, tmp_path / "bad", edit)
    with pytest.raises(BundleError, match="manifest.json") as info:
        load_manifest(bad)
    assert words in str(info.value)


def test_paths_stay_inside_the_bundle(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "outside.onnx").write_text("x")
    os.symlink(tmp_path / "outside.onnx", tmp_path / "b" / "link.onnx")
    (tmp_path / "b" / "in.onnx").write_text("x")
    assert confined(tmp_path / "b", "in.onnx", "here") == tmp_path / "b" / "in.onnx"
    for rel in ("/etc/passwd", "../outside.onnx", "a/../../outside.onnx", "", "a\\b"):
        with pytest.raises(BundleError, match="here: .*plain relative path"):
            confined(tmp_path / "b", rel, "here")
    with pytest.raises(BundleError, match="resolves outside"):
        confined(tmp_path / "b", "link.onnx", "here")


def test_kv_contract_rules():
    windows = (8, 0, 8, 0)
    concat = KVContract.for_windows("concat", windows, dtype="float32", num_kv_heads=2, head_dim=64)
    assert concat.keep == (7, None, 7, None) and concat.capacity == (None,) * 4
    assert [keep_for(w) for w in (1, 128, 0)] == [0, 127, None]
    shared = KVContract.for_windows("shared", windows, dtype="float32", num_kv_heads=2, head_dim=64)
    assert shared.capacity == (None,) * 4                 # a full-length buffer everywhere: the window is a mask
    with pytest.raises(BundleError, match="shared: a sliding layer's capacity is null or >= window"):
        KVContract.for_windows("shared", windows, dtype="float32", num_kv_heads=2, head_dim=64,
                               capacity=(4, None, 16, None))
    with pytest.raises(BundleError, match="a full layer's null"):
        KVContract.for_windows("shared", windows, dtype="float32", num_kv_heads=2, head_dim=64,
                               capacity=(16, 64, 16, None))
    with pytest.raises(BundleError, match="only a shared cache can live on the device"):
        KVContract.for_windows("concat", windows, dtype="float32", num_kv_heads=2, head_dim=64, device="device")
    static = KVContract.for_windows("static", windows, dtype="float16", num_kv_heads=2, head_dim=64,
                                    capacity=(7, 64, 7, 64))
    assert static.to_json()["capacity"] == [7, 64, 7, 64]
    with pytest.raises(BundleError, match="static: every layer has a fixed capacity"):
        KVContract.for_windows("static", windows, dtype="float16", num_kv_heads=2, head_dim=64,
                               capacity=(6, 64, 7, 64))


def test_shapes():
    assert Dynamic().graph_tokens() == {"main": None}
    assert Static(64, 4096).graph_tokens() == {"prefill": 64, "decode": 1}
    assert Static(64, 4096).to_json() == {"kind": "static", "chunk": 64, "context": 4096}
    with pytest.raises(BundleError):
        Static(0, 10)
