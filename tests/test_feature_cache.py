"""The feature cache: keys, the in-memory LRU, the zarr store, and that sessions, clicks and runs reuse features with
the same results (the golden tests with the cache on and after a restart from disk are in
test_engine_golden_video.py). Uses the fast 256-px model."""

import os

import numpy as np
import pytest
import torch

from napari_sam2.core.feature_store import precompute_features, shared_feature_cache
from napari_sam2.core.frames import StackFrames
from napari_sam2.core.prompts import Prompt
from napari_sam2.core.tensor_store import ZarrTensorStore
from napari_sam2.core.tracking import TrackingSession
from napari_sam2.engine import Tracker
from napari_sam2.engine.feature_cache import FeatureCache, encode_image, feature_key
from napari_sam2.io.sample_data import make_nuclei_stack

N_FRAMES = 6


@pytest.fixture(scope="module")
def stack():
    return make_nuclei_stack(shape=(N_FRAMES, 96, 128), n_nuclei=3, seed=5)


@pytest.fixture
def frames(stack, fast_model):
    with StackFrames(stack[0], axis=0, image_size=fast_model.image_size, prefetch=0) as f:
        yield f


def prompts_for(stack, frame=2):
    labels = stack[1][frame]
    out = []
    for obj_id in [int(v) for v in np.unique(labels) if v][:2]:
        rows, cols = np.nonzero(labels == obj_id)
        out.append(Prompt(frame=frame, obj_id=obj_id, points=[(float(rows.mean()), float(cols.mean()))]))
    return out


def entry(*shapes, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(*shape, generator=g).to(dtype) for shape in shapes)


# ---- keys -----------------------------------------------------------------------------------------------------------


def test_the_key_depends_on_the_input_values_and_the_model_only(fast_model, mini_model, frames):
    image = frames[0]
    assert feature_key(fast_model, image) == feature_key(fast_model, image.clone())
    assert feature_key(fast_model, image) != feature_key(fast_model, frames[1])
    nudged = image.clone()
    nudged[0, 0, 0] += 1e-6
    assert feature_key(fast_model, image) != feature_key(fast_model, nudged)
    assert fast_model.signature != mini_model.signature
    assert feature_key(fast_model, image).startswith(f"{fast_model.signature}-cpu-float32-")


def test_the_model_signature_changes_with_any_weight(synthetic_checkpoint):
    from napari_sam2.engine import get_config, load_model

    path = synthetic_checkpoint("sam2.1_hiera_t", 0)
    config = get_config("sam2.1_hiera_t").with_(image_size=256)
    a, b = load_model(path, device="cpu", config=config), load_model(path, device="cpu", config=config)
    assert a.signature == b.signature
    with torch.no_grad():
        b.no_obj_ptr[0, 0] += 1e-3
    b._signature = None
    assert a.signature != b.signature
    assert load_model(path, device="cpu", config=get_config("sam2.1_hiera_t").with_(image_size=512)).signature != a.signature


# ---- the in-memory LRU ----------------------------------------------------------------------------------------------


def test_the_lru_stays_within_its_bytes_and_drops_the_least_recently_used():
    one = entry((4, 4))  # 64 bytes
    cache = FeatureCache(max_bytes=3 * 64)
    for key in "abc":
        cache.put(key, one)
    assert cache.get("a") is not None  # "a" is now the most recent
    cache.put("d", one)
    assert len(cache) == 3 and cache.nbytes == 3 * 64
    assert cache.get("b") is None and all(cache.get(k) is not None for k in "acd")
    cache.put("huge", entry((100, 100)))  # larger than the whole cache: not kept, nothing evicted for it
    assert "huge" not in cache and len(cache) == 3
    none = FeatureCache(max_bytes=0)
    none.put("a", one)
    assert len(none) == 0 and none.get("a") is None


def test_the_store_is_read_on_a_memory_miss_and_written_only_when_asked(tmp_path):
    store = ZarrTensorStore(tmp_path)
    cache = FeatureCache(max_bytes=0, store=store)
    cache.put("k1", entry((2, 3)))
    assert "k1" not in store  # write_store is off
    cache.put("k1", entry((2, 3)), to_store=True)
    assert "k1" in store and "k1" in cache
    assert torch.equal(cache.get("k1")[0], entry((2, 3))[0]) and cache.store_hits == 1


# ---- reuse, with the same results ------------------------------------------------------------------------------------


def test_a_tracker_with_a_cache_gives_the_same_bits_and_encodes_each_frame_once(fast_model, frames, encoder_calls):
    def masks(tracker):
        tracker.add_prompt(2, 1, points=[[60.0, 40.0]], labels=[1])
        out = [r.mask_logits.clone() for r in tracker.propagate_both()]
        tracker.add_prompt(4, 1, points=[[62.0, 41.0]], labels=[1])  # a correction on a tracked frame
        return out + [r.mask_logits.clone() for r in tracker.repropagate(stop_iou=None)]

    plain = masks(Tracker(fast_model, frames))
    assert len(encoder_calls) > N_FRAMES  # without a cache, frames revisited are encoded again
    encoder_calls.clear()
    cache = FeatureCache()
    cached = masks(Tracker(fast_model, frames, feature_cache=cache))
    assert len(encoder_calls) == N_FRAMES
    assert len(plain) == len(cached) and all(torch.equal(a, b) for a, b in zip(plain, cached))
    encoder_calls.clear()
    tracker = Tracker(fast_model, frames, feature_cache=cache)  # a second run on the stack: no encoder at all
    tracker.add_prompt(2, 1, points=[[60.0, 40.0]], labels=[1])
    again = [r.mask_logits for r in tracker.propagate()]
    assert encoder_calls == [] and all(torch.equal(a, b) for a, b in zip(plain, again))


def test_sessions_share_the_process_wide_cache(fast_model, stack, encoder_calls):
    shared_feature_cache().clear()
    prompts = prompts_for(stack)
    with TrackingSession(stack[0], model=fast_model, prefetch=0) as first:
        first.add_prompts(prompts)
        labels = [r.labels for r in first.propagate()]
        assert first.cached_frames() == N_FRAMES
        encoded = len(encoder_calls)
        first.set_prompts(prompts + [Prompt(frame=0, obj_id=9, points=[(20.0, 20.0)])])  # a click: no encoder
        assert len(encoder_calls) == encoded == N_FRAMES
    with TrackingSession(stack[0], model=fast_model, prefetch=0) as second:
        second.add_prompts(prompts)
        again = [r.labels for r in second.propagate()]
    assert len(encoder_calls) == N_FRAMES  # the second session encoded nothing
    assert len(again) == len(labels) and all(np.array_equal(a, b) for a, b in zip(labels, again))
    with TrackingSession(stack[0], model=fast_model, prefetch=0, feature_cache=None) as uncached:
        uncached.add_prompts(prompts)
        plain = [r.labels for r in uncached.propagate()]
    assert all(np.array_equal(a, b) for a, b in zip(labels, plain))


def test_precomputation_stores_every_frame_and_resumes_where_it_stopped(fast_model, frames, tmp_path, encoder_calls):
    cache = FeatureCache(0, ZarrTensorStore(tmp_path))
    run = precompute_features(fast_model, frames, cache)
    for _ in range(2):
        next(run)
    run.close()  # stopped after two frames
    assert len(cache.store.keys()) == 2 and len(encoder_calls) == 2
    done = [index for index, _ in precompute_features(fast_model, frames, cache)]
    assert done == list(range(N_FRAMES))
    assert len(cache.store.keys()) == N_FRAMES and len(encoder_calls) == N_FRAMES  # only the four missing ones
    image = frames[3]
    stored = cache.store.get(feature_key(fast_model, image))
    fresh = fast_model.cacheable(encode_image(fast_model, image))
    assert all(torch.equal(a, b) for a, b in zip(stored, fresh))


def test_precomputation_that_cannot_fit_the_disk_bound_says_so_before_writing(fast_model, frames, tmp_path):
    from napari_sam2 import InputError

    frame_bytes = 0
    for index, key in precompute_features(fast_model, frames, FeatureCache(0, ZarrTensorStore(tmp_path / "probe"))):
        frame_bytes = ZarrTensorStore(tmp_path / "probe").disk_bytes() / (index + 1)
    store = ZarrTensorStore(tmp_path / "small", max_bytes=int(frame_bytes * (N_FRAMES - 2)))
    with pytest.raises(InputError, match=f"these {N_FRAMES} frames.*NAPARI_SAM2_FEATURES_MAX_GB"):
        list(precompute_features(fast_model, frames, FeatureCache(0, store)))
    assert store.keys() == []


def test_the_limits_come_from_the_environment(monkeypatch):
    from napari_sam2 import InputError
    from napari_sam2.core import feature_store
    from napari_sam2.core.tensor_store import size_limit

    monkeypatch.setenv("NAPARI_SAM2_FEATURE_CACHE_MB", "1.5")
    assert size_limit("NAPARI_SAM2_FEATURE_CACHE_MB", 7) == int(1.5 * (1 << 20))
    monkeypatch.delenv("NAPARI_SAM2_FEATURE_CACHE_MB")
    assert size_limit("NAPARI_SAM2_FEATURE_CACHE_MB", 7) == 7
    for bad in ("lots", "-1"):
        monkeypatch.setenv("NAPARI_SAM2_FEATURE_CACHE_MB", bad)
        with pytest.raises(InputError, match="NAPARI_SAM2_FEATURE_CACHE_MB"):
            size_limit("NAPARI_SAM2_FEATURE_CACHE_MB", 7)
    monkeypatch.setenv("NAPARI_SAM2_FEATURES", os.fspath("/some/where"))
    monkeypatch.setenv("NAPARI_SAM2_FEATURES_MAX_GB", "0.5")
    assert str(feature_store.feature_cache_dir()) == "/some/where"
    assert shared_feature_cache().store.folder == feature_store.feature_cache_dir()
    assert shared_feature_cache().store.max_bytes == 1 << 29
    monkeypatch.delenv("NAPARI_SAM2_FEATURES_MAX_GB")
    assert shared_feature_cache().store.max_bytes == 20 << 30
