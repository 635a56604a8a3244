"""The image predictor reproduces Meta's SAM2ImagePredictor on every golden image scenario."""

import numpy as np
import pytest
import torch
from conftest import assert_matches_golden, load_golden

from napari_sam2.engine import ImagePredictor, load_model

IMAGE_SCENARIOS = ["image_sam2.1_t", "image_sam2.1_s", "image_sam2.1_b+", "image_sam2.1_l", "image_sam2_l"]


def run_image_scenario(model, side, gold):
    predictor = ImagePredictor(model)
    predictor.set_image(gold["frames_u8"][0])
    out = {}
    if "image_embed" in gold:
        out["image_embed"] = predictor._features["image_embed"].numpy()
        for i, feat in enumerate(predictor._features["high_res_feats"]):
            out[f"high_res_feats_{i}"] = feat.numpy().astype(np.float16)
    for i, prompt in enumerate(side["prompts"]):
        masks, ious, low_res = predictor.predict(
            point_coords=prompt.get("points"),
            point_labels=prompt.get("labels"),
            box=prompt.get("box"),
            mask_input=gold.get(f"p{i}_mask_input"),
            multimask_output=prompt["multimask_output"],
        )
        out[f"p{i}_low_res_logits"] = low_res
        out[f"p{i}_ious"] = ious
        out[f"p{i}_masks_packed"] = np.packbits(masks > 0, axis=-1)
    return out


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
