"""Prompts of every size after a first click, for the check that a compiled model (Sam2Model.compile) compiles nothing
more once it has made its first mask: shared by tests/test_compile.py and benchmarks/gpu_check.py."""


def varied_clicks(tracker, obj_id, points) -> list:
    """After a first click of `obj_id` at `points` (one (x, y), in pixels) on frame 0 of `tracker`: 2, 3 and 5 clicks
    (positive and negative), a box, and a box with a click, on frames 0 and 1, each for another object. Returns the
    FrameResults, as many as prompts made."""
    (x, y), = points
    prompts = [{"points": [(x + 3 * i, y + 2 * i) for i in range(n)], "labels": [1] * (n - 1) + [0]} for n in (2, 3, 5)]
    box = (x - 20, y - 20, x + 20, y + 20)
    prompts += [{"box": box}, {"box": box, "points": [(x, y)], "labels": [1]}]
    results = []
    for i, prompt in enumerate(prompts):
        other = obj_id + 1 + i
        results.append(tracker.set_prompt(i % 2, other, **prompt))
        tracker.remove_object(other)
    return results
