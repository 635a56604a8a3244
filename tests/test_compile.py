"""Sam2Model.compile (torch.compile), on the CPU with inductor's C++ code (on a GPU it is Triton's, measured by
benchmarks/gpu_check.py): compiled once, the model compiles nothing more for new numbers of clicks, a box, or a memory
that grows over the first frames; it agrees with the eager model within rounding; what it computes is cached apart
from the eager model's; get_model, NAPARI_SAM2_COMPILE and `--compile` switch it on."""

import argparse

import pytest
import torch
import torch._dynamo
from compiled_clicks import varied_clicks
from conftest import build_mini_model

from napari_sam2 import InputError
from napari_sam2.core.frames import StackFrames
from napari_sam2.engine import Tracker
from napari_sam2.engine.checkpoints import at_image_size
from napari_sam2.engine.feature_cache import feature_key
from napari_sam2.io.sample_data import make_nuclei_stack
from napari_sam2.models.loaded import clear_model_cache, fast_variant, get_model

N_FRAMES = 8
CLICK = [(30.0, 20.0)]  # (x, y) on a nucleus of frame 0


@pytest.fixture(scope="module")
def frames():
    stack = make_nuclei_stack(shape=(N_FRAMES, 96, 128), n_nuclei=3, seed=5)[0]
    with StackFrames(stack, axis=0, image_size=128, prefetch=0) as made:
        yield made


def clicks_and_propagation(model, frames, check_recompiles=False):
    """Low-res logits of: a click, clicks of every other size and a box (compiled_clicks), a propagation over the
    stack, a two-click correction and its re-propagation; all after the first click with `check_recompiles` under
    torch._dynamo's error_on_recompile."""
    tracker = Tracker(model, frames)
    outputs = [tracker.set_prompt(0, 1, points=CLICK, labels=[1]).low_res_logits]
    with torch._dynamo.config.patch(error_on_recompile=check_recompiles):
        outputs += [result.low_res_logits for result in varied_clicks(tracker, 1, CLICK)]
        outputs += [result.low_res_logits for result in tracker.propagate()]
        tracker.add_prompt(4, 1, points=[(32.0, 22.0), (60.0, 60.0)], labels=[1, 0])
        outputs += [result.low_res_logits for result in tracker.repropagate(stop_iou=None)]
    return tracker, outputs


def test_compiled_once_the_model_compiles_nothing_more_for_prompts_or_memory_and_agrees_with_eager(frames):
    eager, compiled = build_mini_model(), build_mini_model().compile()
    _, expected = clicks_and_propagation(eager, frames)
    tracker, produced = clicks_and_propagation(compiled, frames, check_recompiles=True)
    assert len(produced) == len(expected) == 1 + 5 + N_FRAMES + (N_FRAMES + 1)  # the corrected frame in each direction
    masks_differ = 0
    for want, got in zip(expected, produced):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-4)  # seen: 1e-5 at most
        masks_differ += int(((got > 0) != (want > 0)).sum())
    assert masks_differ <= 2  # a pixel within rounding of 0 may flip
    assert sum(int((logits > 0).sum()) for logits in expected) > 1000  # there were masks to compare
    # the guard above is live: a new number of objects tracked together does compile again (once)
    tracker.add_prompt(0, 2, points=[(90.0, 60.0)], labels=[1])
    with torch._dynamo.config.patch(error_on_recompile=True), pytest.raises(Exception, match="[Rr]ecompil"):
        list(tracker.propagate_from_prompts())


def test_compiled_results_are_cached_apart_from_eager_ones(frames):
    eager, compiled = build_mini_model(), build_mini_model().compile(backend="eager")
    assert (eager.numerics, compiled.numerics) == ("cpu-float32", "cpu-float32-eager")
    assert build_mini_model().compile(backend="eager", mode="max-autotune").numerics == "cpu-float32-eager-max-autotune"
    assert compiled.signature == eager.signature  # the same weights
    assert feature_key(compiled, frames[0]) != feature_key(eager, frames[0])
    assert Tracker(compiled, frames).track_settings != Tracker(eager, frames).track_settings
    assert compiled.compile() is compiled and compiled.compiled == {"backend": "eager", "mode": None}
    resized = at_image_size(compiled, 192)
    assert resized.compiled == compiled.compiled  # fast mode of a compiled model is compiled too


def test_get_model_compiles_when_asked_or_when_the_environment_says(synthetic_checkpoint, monkeypatch):
    path = synthetic_checkpoint("sam2.1_hiera_t", 0)
    monkeypatch.delenv("NAPARI_SAM2_COMPILE", raising=False)
    try:
        plain = get_model(path, "cpu")
        compiled = get_model(path, "cpu", compile=True)
        assert plain.compiled is None and compiled.compiled == {"backend": "inductor", "mode": None}
        assert get_model(path, "cpu", compile=True) is compiled and get_model(path, "cpu") is plain
        assert get_model(path, "cpu", fast=True, compile=True) is fast_variant(compiled)
        assert fast_variant(compiled).compiled == compiled.compiled
        assert get_model(plain, compile=True) is plain  # a loaded model is taken as it is
        monkeypatch.setenv("NAPARI_SAM2_COMPILE", "1")
        assert get_model(path, "cpu") is compiled and get_model(path, "cpu", compile=False) is plain
        monkeypatch.setenv("NAPARI_SAM2_COMPILE", "maybe")
        for compile in (None, True, False):  # a bad value is reported whatever overrides it
            with pytest.raises(InputError, match=r"NAPARI_SAM2_COMPILE must be 1 \(compile\) or 0"):
                get_model(path, "cpu", compile=compile)
    finally:
        clear_model_cache()


def test_the_command_line_compile_switch(monkeypatch):
    from napari_sam2.cli import commands as cli

    asked = []
    monkeypatch.setattr(cli, "_load_model", lambda name, device, quiet, compile: asked.append(compile))
    for compile in (True, False, None):
        cli._model_for(argparse.Namespace(model="m", device="cpu", quiet=True, fast=False, compile=compile))
    assert asked == [True, False, None]  # None: as NAPARI_SAM2_COMPILE says
    parser = cli.build_parser()
    for command in (["segment", "x.tif"], ["track", "x.tif", "--out", "tracks"], ["embed", "x.tif"]):
        assert parser.parse_args([*command, "--compile"]).compile is True
        assert parser.parse_args([*command, "--no-compile"]).compile is False
        assert parser.parse_args(command).compile is None


def test_a_backend_that_cannot_build_its_kernels_is_a_clear_error_before_anything_runs(monkeypatch):
    import shutil

    from napari_sam2 import DeviceError
    from napari_sam2.engine import devices

    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    model = build_mini_model()
    with pytest.raises(DeviceError, match=r"needs a C\+\+ compiler.*without compiling \(--no-compile"):
        model.compile()
    assert model.compiled is None and model.numerics == "cpu-float32"  # left as it was
    assert model.compile(backend="eager").compiled["backend"] == "eager"  # a backend that builds nothing
    monkeypatch.setattr(devices.importlib.util, "find_spec", lambda name: None)
    assert "needs Triton" in devices.compile_problem("cuda", "inductor")
    assert devices.compile_problem("cuda", "eager") is None
    monkeypatch.setenv("CXX", "/opt/my-g++")
    assert "/opt/my-g++" in devices.compile_problem("cpu", "inductor")
