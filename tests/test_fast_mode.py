"""Fast mode: the same weights at a 512-px input, in bfloat16 on CPUs that compute it natively
(models.loaded.fast_variant), from the API, the command line and the widget. Its speed-up and its deviation from
exact SAM2 are measured by benchmarks/speed_benchmark.py and benchmarks/fast_mode_deviation.py, not here."""

import argparse
import weakref

import numpy as np
import pytest
import torch

from napari_sam2 import InputError
from napari_sam2.api import Prompt, segment_stack
from napari_sam2.engine import get_config, load_model
from napari_sam2.engine.checkpoints import at_image_size
from napari_sam2.io.sample_data import make_nuclei_stack
from napari_sam2.models import loaded
from napari_sam2.models.loaded import FAST_IMAGE_SIZE, fast_variant


@pytest.fixture(scope="module")
def full_model(synthetic_checkpoint):
    """The official tiny variant at SAM2's own 1024-px input (random weights)."""
    return load_model(synthetic_checkpoint("sam2.1_hiera_t", 0), device="cpu")


@pytest.fixture(params=[False, True], ids=["float32 CPU", "native bfloat16 CPU"])
def native_bf16(request, monkeypatch):
    """A CPU without, then with, native bfloat16 (AVX512-BF16 or AMX), whatever this machine has."""
    monkeypatch.setattr(loaded, "cpu_native_bf16", lambda: request.param)
    monkeypatch.setattr(loaded, "_fast_models", weakref.WeakKeyDictionary())  # what this machine made is not reused
    return request.param


def test_the_fast_variant_has_the_same_weights_at_512_px_and_is_made_once(full_model, fast_model, native_bf16):
    fast = fast_variant(full_model)
    assert FAST_IMAGE_SIZE == 512 and (full_model.image_size, fast.image_size) == (1024, 512)
    assert fast.autocast_dtype == (torch.bfloat16 if native_bf16 else torch.float32)
    assert fast.numerics == ("cpu-bfloat16" if native_bf16 else "cpu-float32")
    assert fast_variant(full_model) is fast
    full, small = full_model.state_dict(), fast.state_dict()
    assert full.keys() == small.keys() and all(torch.equal(full[k], small[k]) for k in full)
    assert fast.signature != full_model.signature  # features of one are never taken for the other's
    small_fast = fast_variant(fast_model)  # 256 px: already smaller than the fast input
    assert small_fast.image_size == 256
    assert (small_fast is fast_model) is not native_bf16  # in bfloat16 it is a model of its own
    assert small_fast.autocast_dtype == fast.autocast_dtype and fast_variant(small_fast) is small_fast
    assert fast_model.autocast_dtype == full_model.autocast_dtype == torch.float32  # the exact models stay exact


def test_an_input_size_that_is_no_multiple_of_64_is_refused(full_model):
    with pytest.raises(InputError, match="multiple of 64"):
        at_image_size(full_model, 500)


def test_segment_stack_fast_is_the_model_run_at_512_px(full_model, synthetic_checkpoint, native_bf16):
    stack, truth = make_nuclei_stack(shape=(6, 96, 128), n_nuclei=3, seed=5)
    rows, cols = np.nonzero(truth[1] == truth[1].max())
    prompts = [Prompt(frame=1, obj_id=1, points=[(float(rows.mean()), float(cols.mean()))])]
    at_512 = load_model(synthetic_checkpoint("sam2.1_hiera_t", 0), device="cpu",
                        config=get_config("sam2.1_hiera_t").with_(image_size=512))
    at_512.precision = torch.bfloat16 if native_bf16 else None
    fast = segment_stack(stack, prompts, model=full_model, fast=True)
    assert fast.any()
    np.testing.assert_array_equal(fast, segment_stack(stack, prompts, model=at_512))


def test_the_command_line_fast_switch_loads_the_fast_variant(monkeypatch, full_model):
    from napari_sam2.cli import commands as cli

    monkeypatch.setattr(cli, "_load_model", lambda name, device, quiet, compile: full_model)
    args = argparse.Namespace(model="m", device="cpu", quiet=True, fast=True, compile=False)
    assert cli._model_for(args) is fast_variant(full_model)
    assert cli._model_for(argparse.Namespace(model="m", device="cpu", quiet=True, fast=False, compile=False)) is full_model
    assert cli.build_parser().parse_args(["embed", "x.tif", "--fast"]).fast is True
    assert cli.build_parser().parse_args(["segment", "x.tif", "--fast"]).fast is True
    assert cli.build_parser().parse_args(["embed", "x.tif"]).fast is False


@pytest.mark.gui
def test_the_widget_fast_mode_makes_a_fast_session_of_its_own(make_napari_viewer, fast_model):
    from napari_sam2._napari._qt.widget import Sam2Widget

    viewer = make_napari_viewer()
    viewer.add_image(make_nuclei_stack(shape=(6, 96, 128), n_nuclei=3, seed=5)[0], name="nuclei")
    widget = Sam2Widget(viewer)
    try:
        widget.add_model_choice("test model", fast_model)
        exact = widget._target(require_stack=True, quiet=True).spec
        widget.fast.value = True
        fast = widget._target(require_stack=True, quiet=True).spec
        assert exact.options["fast"] is False and fast.options["fast"] is True
        assert fast.key != exact.key  # switching the mode makes a new session (its own features and masks)
        assert widget.fast in widget._run_controls  # not switched in the middle of a run
    finally:
        widget.close()
