"""The tracker reproduces Meta's SAM2VideoPredictor on the extra golden scenarios of tests/data/golden_extra.

They were made with Meta's package (sam2 1.1.0) at a 256-px model input by
`benchmarks/reference_scenarios.py --write-golden tests/data/golden_extra` (FIXED_SCENARIOS there); each sidecar
holds the calls, the checkpoint seed, how the frames are made (regenerated here, checked against their sha256)
and how far our tracker and Meta's code re-run with other threads were from the golden arrays when it was written.
Only some arrays are stored (the sidecar's `omitted`); every stored one must be within the reference tolerances.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_matches_golden
from video_golden import TensorFrames, frames_from_spec, frames_sha256, model_inputs, run_calls

from napari_sam2.engine import Tracker, get_config, load_model

pytestmark = pytest.mark.golden

EXTRA = Path(__file__).resolve().parent / "data" / "golden_extra"
SCENARIOS = sorted(path.stem for path in EXTRA.glob("*.json"))


def load_extra(name):
    side = json.loads((EXTRA / f"{name}.json").read_text())
    with np.load(EXTRA / f"{name}.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return side, arrays


def scenario_inputs(name, golden_dir, synthetic_checkpoint):
    """(sidecar, golden arrays, model, frames) of an extra scenario."""
    side, gold = load_extra(name)
    frames = frames_from_spec(side["frames"], golden_dir)
    assert frames_sha256(frames) == side["frames"]["sha256_u8"], f"{name}: the frames are not the golden's any more"
    size = side["image_size"]
    config = get_config(side["config"]).with_(image_size=size)
    model = load_model(synthetic_checkpoint(side["config"], side["checkpoint"]["seed"]), device="cpu", config=config)
    return side, gold, model, TensorFrames(model_inputs(frames, size), side["video_hw"])


@pytest.mark.parametrize("name", SCENARIOS)
def test_extra_scenario_matches_reference(name, golden_dir, compare_module, synthetic_checkpoint):
    torch.set_num_threads(2)
    side, gold, model, frames = scenario_inputs(name, golden_dir, synthetic_checkpoint)
    produced = run_calls(Tracker(model, frames), side["calls"])
    assert_matches_golden(compare_module, side, gold, produced)


def test_cached_features_and_a_restart_from_disk_match_the_reference(golden_dir, compare_module, synthetic_checkpoint,
                                                                       tmp_path):
    """The feature cache on (in memory, written to the zarr store), then a restart (a new process's view: nothing in
    memory, every frame read back from the store): both runs match Meta's outputs, and the second never runs the image
    encoder. The scenario revisits frames (reverse passes, corrections), as the cache is for."""
    from napari_sam2.core.tensor_store import ZarrTensorStore
    from napari_sam2.engine.feature_cache import FeatureCache

    torch.set_num_threads(2)
    side, gold, model, frames = scenario_inputs("video_sam2_t_correction_after_reverse", golden_dir,
                                                synthetic_checkpoint)
    store = ZarrTensorStore(tmp_path / "features")
    first = FeatureCache(1 << 30, store, write_store=True)
    assert_matches_golden(compare_module, side, gold, run_calls(Tracker(model, frames, feature_cache=first), side["calls"]))
    assert len(store.keys()) == first.misses > 0 and first.hits > 0  # each frame encoded once, then reused

    encoded = []
    encode = model.encode_image
    model.encode_image = lambda image: encoded.append(1) or encode(image)
    try:
        restarted = FeatureCache(0, store)
        produced = run_calls(Tracker(model, frames, feature_cache=restarted), side["calls"])
    finally:
        del model.encode_image
    assert encoded == [] and restarted.store_hits > 0 and restarted.misses == 0
    assert_matches_golden(compare_module, side, gold, produced)
