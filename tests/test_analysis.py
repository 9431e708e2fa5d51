import importlib.util
from pathlib import Path

import pytest
import torch

from molabench.engine.algorithm import build_algorithm
from molabench.report import analysis

ROOT = Path(__file__).resolve().parents[1]


def test_principal_component_ratio():
    assert analysis.principal_component_ratio(torch.outer(torch.arange(1.0, 9), torch.ones(5))) == pytest.approx(1 / 5)
    assert analysis.principal_component_ratio(torch.eye(10)) == 1.0
    # singular values 8, 1, 1 (sum 10): 99% needs all three; 80% needs the first one only
    w = torch.diag(torch.tensor([8.0, 1.0, 1.0]))
    assert analysis.principal_component_ratio(w) == 1.0
    assert analysis.principal_component_ratio(w, alpha=0.8) == pytest.approx(1 / 3)
    conv = torch.randn(4, 2, 3, 3)
    assert analysis.singular_values(conv).shape == (4,)


ROUTER = {
    "name": "mola_router",
    "architecture": {"name": "mola_router", "rank": 2, "stages": ["layer3", "layer4"], "router": "light"},
    "weighting": {"name": "ew"},
    "penalties": {"twd": {"weight": 0.1, "omega_dim": 8}},
}


@pytest.mark.parametrize("shape", [(64, 576), (300, 40), (16, 16, 3, 3)])
def test_singular_values_equal_svdvals(shape):
    weight = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    s = analysis.singular_values(weight)
    reference = torch.linalg.svdvals(weight.double().reshape(shape[0], -1))
    assert s.shape == reference.shape and bool((s[:-1] >= s[1:]).all())
    assert float((s - reference).abs().max()) <= 1e-12 * float(reference[0])


def test_spectra_ratios_and_router_embeddings(tiny_shapes):
    torch.manual_seed(0)
    algorithm = build_algorithm(ROUTER, {"name": "resnet18"}, tiny_shapes)
    layers = analysis.adapted_layers(algorithm.arch)
    assert layers
    for layer in layers.values():
        torch.nn.init.normal_(layer.lora_B)
    spectra = analysis.layer_spectra(algorithm.arch)
    name = next(iter(spectra))
    assert set(spectra[name]) == {"W0", "W0+dW_0", "W0+dW_1", "W0+dW_2", "W0+dW_3"}
    assert not torch.allclose(spectra[name]["W0"], spectra[name]["W0+dW_0"])
    ratios = analysis.pc_ratios(algorithm.arch)
    assert "encoder.layer1.0.conv1" in ratios and 0 < ratios[name]["W0"] <= 1 and len(ratios[name]) == 5
    omega, tasks = analysis.router_embeddings(algorithm, tiny_shapes, limit=20)
    assert omega.shape == (20, 8) and torch.allclose(omega.norm(dim=1), torch.ones(20), atol=1e-5)
    assert tasks.shape == (20,)


def test_parameter_counts_grow_with_tasks():
    from molabench.architectures import ARCHITECTURES, load_all
    from molabench.models.backbones import build_backbone

    load_all()
    counts = analysis.parameter_counts(
        lambda tasks: ARCHITECTURES.build("single_task", tasks=tasks, setting="multi_input", backbone=lambda: build_backbone("resnet18")),
        [1, 2],
    )
    assert counts[1] == 2 * counts[0]


@pytest.mark.slow
def test_analysis_script_writes_the_figures(tmp_path):
    from tests.cli import train

    run = train("method=mola_router", "method.router=light", "trainer=smoke", "trainer.checkpoint=true", "data.n_train=16",
                "data.n_val=8", "data.n_test=8", "data.image_size=16", "run_id=r", results=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr
    spec = importlib.util.spec_from_file_location("analysis_script", ROOT / "scripts" / "analysis.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--run", str(tmp_path / "runs" / "shapes" / "r"), "--out", str(tmp_path / "figures"), "--fig5-max-tasks", "3"]) == 0
    pngs = sorted(p.name for p in (tmp_path / "figures" / "r").glob("*.png"))
    assert pngs == ["fig3_pc_ratio.png", "fig4_spectra.png", "fig5_params.png", "fig6_router.png"]
    # Fig. 6 as the paper shows it: a run without the TwD loss (its router's mixing weights) beside the one with it
    plain = train("method=mola_router", "method.router=light", "method.twd=false", "trainer=smoke", "trainer.checkpoint=true",
                  "data.n_train=16", "data.n_val=8", "data.n_test=8", "data.image_size=16", "run_id=plain", results=tmp_path)  # fmt: skip
    assert plain.returncode == 0, plain.stderr
    from PIL import Image

    from molabench.report import analysis_figures as af

    _, with_twd, data = af.load_run(tmp_path / "runs" / "shapes" / "r")
    _, without, data_without = af.load_run(tmp_path / "runs" / "shapes" / "plain")
    af.fig6(with_twd, data, tmp_path / "both", (without, data_without))
    single, both = Image.open(tmp_path / "figures" / "r" / "fig6_router.png"), Image.open(tmp_path / "both" / "fig6_router.png")
    assert both.size[0] > 1.5 * single.size[0]  # two panels


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
def test_built_architectures_hold_exactly_the_formulas_parameters(backbone):
    """architectures.md's closed formulas (Fig. 5's crosses) equal the models actually built, heads excluded."""
    from molabench.report import param_formulas as pf

    facts = pf.backbone_facts(backbone)
    assert facts["P"] == {"resnet18": 11_176_512, "resnet50": 23_508_032}[backbone]
    formula = pf.formulas(facts["P"], facts["N_in"], facts["levels"], backbone, facts["S"])
    for name, count in formula.items():
        for t in (2, 3, 9):
            assert pf.built_count(name, t, backbone, **pf.FIG5.get(name, {})) == count(t), (name, t)
    # the spec's table: MedMNIST T = 9 (ResNet-18) and VLCS T = 4 (ResNet-50), in millions
    table = {"resnet18": (9, {"cross_stitch": 100.59, "mmoe": 112.78, "cgc": 114.47, "dselect_k": 114.14, "ple": 124.41, "mtan": 25.41}),
             "resnet50": (4, {"cross_stitch": 94.03, "mmoe": 96.44, "cgc": 118.74, "dselect_k": 97.64, "ple": 131.59, "mtan": 48.14})}
    t, expected = table[backbone]
    for name, millions in expected.items():
        assert round(formula[name](t) / 1e6, 2) == millions, name
