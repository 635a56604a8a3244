"""Loading checkpoints: every official variant strictly and recognised; every bad file a clear error."""

import hashlib
import json
from collections import OrderedDict

import pytest
import torch
from conftest import DATA

from napari_sam2 import CheckpointError, DeviceError, Sam2Error
from napari_sam2.engine import VARIANTS, detect_variant, load_model, resolve_device
from napari_sam2.engine.synthetic_checkpoints import synthetic_state_dict

CHECKSUMS = json.loads((DATA / "checkpoint_checksums.json").read_text())["checksums"]


def manifest(variant):
    return json.loads((DATA / "manifests" / f"{variant}.json").read_text())["keys"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_loads_strictly_and_is_recognised(variant, synthetic_checkpoint):
    """The generator reproduces the reference checksums; the file loads into the right variant."""
    state = synthetic_state_dict(variant, 0)
    keys = manifest(variant)
    assert [k for k, _, _ in keys] == sorted(state, key=[k for k, _, _ in keys].index)
    assert {k: list(v.shape) for k, v in state.items()} == {k: s for k, s, _ in keys}
    digest = hashlib.sha256()
    for name, _, _ in keys:
        digest.update(state[name].numpy().tobytes())
    assert digest.hexdigest() == CHECKSUMS[variant]["0"]["sha256"]

    path = synthetic_checkpoint(variant, 0)
    model = load_model(path, device="cpu")
    assert model.config.name == variant
    loaded = model.state_dict()
    for name in ("no_obj_ptr", "image_encoder.trunk.pos_embed", "sam_mask_decoder.iou_token.weight"):
        assert torch.equal(loaded[name], state[name])
    assert not model.training


def test_scenario_seeds_match_reference_checksums():
    for variant, seeds in CHECKSUMS.items():
        for seed, info in seeds.items():
            if seed == "0" or not variant.endswith("_t"):
                continue
            state = synthetic_state_dict(variant, int(seed))
            for key, first in info["first_values"].items():
                assert state[key].flatten()[:4].tolist() == pytest.approx(first, abs=0)


@pytest.fixture(scope="module")
def tiny_state():
    return synthetic_state_dict("sam2.1_hiera_t", 0)


def _save(tmp_path, obj, name="ckpt.pt"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def _assert_error(path, *fragments, **kwargs):
    with pytest.raises(CheckpointError) as info:
        load_model(path, device="cpu", **kwargs)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_missing_file(tmp_path):
    _assert_error(tmp_path / "nothing.pt", "No checkpoint file", "models download")


def test_folder_instead_of_file(tmp_path):
    _assert_error(tmp_path, "is a folder")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    _assert_error(path, "empty", "download it again")


def test_text_file(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("these are not weights\n" * 50)
    _assert_error(path, "not a PyTorch checkpoint")


def test_pickle_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"\x80\x02junk" * 10)
    _assert_error(path, "could not be read as a PyTorch checkpoint")


def test_truncated_file(tmp_path, synthetic_checkpoint):
    data = synthetic_checkpoint("sam2.1_hiera_t", 0).read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    _assert_error(path, "truncated or corrupt", "download it again")


class NotATensor:
    pass


def test_file_with_python_objects_is_refused(tmp_path):
    path = _save(tmp_path, {"model": {"x": NotATensor()}})
    _assert_error(path, "Python objects", "not loaded")


def test_sam_v1_checkpoint(tmp_path):
    sam1 = {
        "image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 16, 16),
        "prompt_encoder.no_mask_embed.weight": torch.zeros(1, 256),
        "mask_decoder.iou_token.weight": torch.zeros(1, 256),
    }
    _assert_error(_save(tmp_path, sam1), "SAM (v1", "SAM2")


def test_other_model(tmp_path):
    _assert_error(_save(tmp_path, {"model": {"fc.weight": torch.zeros(2, 2)}}), "not SAM2")


def test_no_weights_inside(tmp_path):
    _assert_error(_save(tmp_path, {"epoch": torch.tensor(3), "model": {}}), "no model weights")


def test_config_that_does_not_match(tmp_path, synthetic_checkpoint):
    path = synthetic_checkpoint("sam2.1_hiera_t", 0)
    _assert_error(path, "sam2.1_hiera_t model", "sam2.1_hiera_s", config="sam2.1_hiera_s")
    _assert_error(path, "sam2_hiera_t", config="sam2_hiera_t")


def test_missing_and_misshapen_keys(tmp_path, tiny_state):
    state = OrderedDict(tiny_state)
    del state["obj_ptr_proj.layers.0.bias"]
    state["no_obj_ptr"] = torch.zeros(1, 128)
    _assert_error(_save(tmp_path, {"model": state}), "does not fit", "missing", "wrong shape")


def test_unknown_trunk_size(tmp_path, tiny_state):
    state = OrderedDict(tiny_state)
    state["image_encoder.trunk.blocks.12.norm1.weight"] = torch.zeros(768)
    _assert_error(_save(tmp_path, {"model": state}), "matches none of the official variants")


def test_unknown_variant_name():
    with pytest.raises(Sam2Error, match="Unknown SAM2 variant"):
        from napari_sam2.engine import get_config

        get_config("sam3_hiera_t")


def test_detect_variant_of_every_manifest():
    for variant in VARIANTS:
        shapes = {k: torch.empty(s, device="meta") for k, s, _ in manifest(variant)}
        assert detect_variant(shapes) == variant


def test_device_choice():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cuda", "mps", "cpu")
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(DeviceError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(DeviceError, match="Unknown device"):
        resolve_device("tpu")
