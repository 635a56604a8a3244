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


@pytest.mark.parametrize("name", SCENARIOS)
def test_extra_scenario_matches_reference(name, golden_dir, compare_module, synthetic_checkpoint):
    torch.set_num_threads(2)
    side, gold = load_extra(name)
    frames = frames_from_spec(side["frames"], golden_dir)
    assert frames_sha256(frames) == side["frames"]["sha256_u8"], f"{name}: the frames are not the golden's any more"
    size = side["image_size"]
    config = get_config(side["config"]).with_(image_size=size)
    model = load_model(synthetic_checkpoint(side["config"], side["checkpoint"]["seed"]), device="cpu", config=config)
    tracker = Tracker(model, TensorFrames(model_inputs(frames, size), side["video_hw"]))
    produced = run_calls(tracker, side["calls"])
    assert_matches_golden(compare_module, side, gold, produced)
