"""A caller's session options over the bundle's: Model.load(session_options=...), checked by the same table of known
keys and values as a manifest's, but refused as the caller's mistake (ArgumentError), not the bundle's."""

from __future__ import annotations

import pytest

from gptoss.bundle import load_manifest
from gptoss.runtime import Model
from gptoss.runtime.errors import ArgumentError
from gptoss.runtime.session import session_options


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return tiny_bundle("cpu")


def test_an_override_wins_over_the_bundle(bundle):
    manifest = load_manifest(bundle)
    assert manifest.target.session_options["graph_optimization_level"] == "ORT_ENABLE_ALL"
    so = session_options(manifest, None, {"graph_optimization_level": "ORT_DISABLE_ALL",
                                          "session.intra_op.allow_spinning": "0"})
    assert so.graph_optimization_level.name == "ORT_DISABLE_ALL"
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_model_load_takes_overrides_and_still_runs(bundle):
    model = Model.load(bundle, session_options={"session.intra_op.allow_spinning": "0"})
    spin = Model.load(bundle)
    ids = [1, 2, 3, 4]
    assert (model.logits(ids) == spin.logits(ids)).all()


@pytest.mark.parametrize("options, words", [
    ({"session.bogus": "1"}, "session_options 'session.bogus' is not a session config entry"),
    ({"intra_op_num_threads": -1}, "session_options 'intra_op_num_threads' is -1"),
    ({"optimized_model_filepath": "/tmp/x.onnx"}, "is not a session option this runtime knows"),
])
def test_a_bad_override_is_the_callers_error(bundle, options, words):
    with pytest.raises(ArgumentError, match=words):
        Model.load(bundle, session_options=options)
