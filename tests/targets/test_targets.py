"""Every target row is consistent with the quant scheme registry, and every target exports a working bundle."""

import pytest

from gptoss.bundle import load_manifest
from gptoss.quant.schemes import PARTS, get_scheme
from gptoss.targets.registry import TARGETS


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_row_names_known_passes_and_schemes(name):
    target = TARGETS[name]
    assert all(callable(p) and p.name for p in target.passes)
    assert set(target.quant) == set(target.allowed) == set(PARTS)
    for part in PARTS:
        assert target.quant[part] in target.allowed[part]
        for scheme in target.allowed[part]:
            get_scheme(scheme).check_part(part)        # raises if quant's registry disagrees


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_target_exports_a_bundle_its_manifest_describes(name, tiny_bundle):
    from helpers import SOURCE_OF

    manifest = load_manifest(tiny_bundle(name, source=SOURCE_OF.get(name, "hf")))
    assert manifest.target.name == name
    assert manifest.target.execution_provider == TARGETS[name].provider.name
    assert manifest.quant == dict(TARGETS[name].quant)
    assert manifest.kv.dtype == TARGETS[name].kv_dtype and manifest.shapes == TARGETS[name].shapes
