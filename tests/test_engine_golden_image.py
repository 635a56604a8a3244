"""The image predictor reproduces Meta's SAM2ImagePredictor on every golden image scenario."""

import pytest
import torch
from conftest import assert_matches_golden, load_golden
from image_golden import IMAGE_SCENARIOS, run_image_scenario

from napari_sam2.engine import load_model


@pytest.mark.golden
@pytest.mark.parametrize("scenario", IMAGE_SCENARIOS)
def test_image_scenario_matches_reference(scenario, golden_dir, compare_module, synthetic_checkpoint):
    torch.set_num_threads(2)
    side, gold = load_golden(golden_dir, scenario)
    path = synthetic_checkpoint(side["config"], side["checkpoint"]["seed"])
    model = load_model(path, device="cpu")
    assert model.config.name == side["config"]
    produced = run_image_scenario(model, side, gold)
    rows = assert_matches_golden(compare_module, side, gold, produced)
    assert len(rows) >= 3 * len(side["prompts"])
