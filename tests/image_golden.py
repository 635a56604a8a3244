"""The golden image scenarios' calls, run through our ImagePredictor (shared by tests/test_engine_golden_image.py and
benchmarks/gpu_check.py)."""

import numpy as np

from napari_sam2.engine import ImagePredictor

IMAGE_SCENARIOS = ["image_sam2.1_t", "image_sam2.1_s", "image_sam2.1_b+", "image_sam2.1_l", "image_sam2_l"]


def run_image_scenario(model, side, gold) -> dict:
    """The arrays the golden image scenarios store (shared/reference/README.md), from `model` on any device."""
    predictor = ImagePredictor(model)
    predictor.set_image(gold["frames_u8"][0])
    out = {}
    if "image_embed" in gold:
        out["image_embed"] = predictor._features["image_embed"].float().cpu().numpy()
        for i, feat in enumerate(predictor._features["high_res_feats"]):
            out[f"high_res_feats_{i}"] = feat.float().cpu().numpy().astype(np.float16)
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
