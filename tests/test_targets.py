"""Every target row is consistent with the quant scheme registry, and every target exports a working bundle."""

import json

import pytest

from gptoss.export.bundle import export_bundle
from gptoss.quant.schemes import PARTS, get_scheme
from gptoss.targets.passes import PASSES
from gptoss.targets.registry import TARGETS


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_row_names_known_passes_and_schemes(name):
    target = TARGETS[name]
    assert set(target.passes) <= set(PASSES)
    assert set(target.quant) == set(target.allowed) == set(PARTS)
    for part in PARTS:
        assert target.quant[part] in target.allowed[part]
        for scheme in target.allowed[part]:
            get_scheme(scheme).check_part(part)        # raises if quant's registry disagrees


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_target_exports_a_bundle_its_manifest_describes(name, tiny_hf, tmp_path):
    bundle = export_bundle(tiny_hf, tmp_path / name, target=name)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["target"]["name"] == name
    assert manifest["target"]["execution_provider"] == TARGETS[name].execution_provider
    assert manifest["quant"] == dict(TARGETS[name].quant)
