"""One model of axis roles: arrays (the scripting API's axis numbers), files (axis letters) and napari layers (axis
labels) give the same roles for the same stack, and a frame's index reads exactly that frame."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from napari.layers import Image

from napari_sam2._napari.stack_plane import stack_plane
from napari_sam2.core.axes import axis_letter, axis_roles, stack_axes


@st.composite
def stacks(draw):
    """Axis letters (a sub-sequence of T Z C, in any order, then Y X), a shape, the frame letter and positions."""
    extra = draw(st.lists(st.sampled_from("TZC"), min_size=1, max_size=3, unique=True))
    if extra == ["C"]:
        extra = ["Z", "C"]
    letters = "".join(extra) + "YX"
    shape = tuple(draw(st.integers(2, 4)) for _ in letters[:-2]) + (5, 6)
    frame = draw(st.sampled_from([letter for letter in extra if letter != "C"]))
    position = tuple(draw(st.integers(0, size - 1)) for size in shape)
    return letters, shape, frame, position


@settings(max_examples=40, deadline=None)
@given(stacks())
def test_files_arrays_and_layers_agree_on_the_roles(stack):
    letters, shape, frame_letter, position = stack
    frame_axis = letters.index(frame_letter)
    channel_axis = letters.index("C") if "C" in letters else None
    others = {axis: position[axis] for axis in range(len(shape) - 2) if axis not in (frame_axis, channel_axis)}

    from_file = stack_axes(letters, shape, frame_letter.lower())
    from_array = axis_roles(shape, frame_axis, channel_axis, others)
    layer = Image(np.zeros(shape, np.uint8), axis_labels=tuple(letters.lower()))
    plane = stack_plane(layer, frame_axis, position)
    from_layer = axis_roles(shape, plane.frame_axis, plane.channel_axis, plane.fixed_indices)

    for roles in (from_file, from_array, from_layer, plane):
        assert (roles.frame_axis, roles.channel_axis) == (frame_axis, channel_axis)
        assert roles.spatial_axes == (len(shape) - 2, len(shape) - 1)
    assert from_file.other_axes == tuple(sorted(others)) == from_array.other_axes
    assert from_array.fixed == from_layer.fixed == plane.fixed == tuple(sorted(others.items()))

    # The index of frame f reads exactly frame f at the fixed positions: its channels and its two image axes.
    data = np.arange(np.prod(shape)).reshape(shape)
    f = position[frame_axis]
    expected = data[tuple(f if a == frame_axis else others.get(a, slice(None)) for a in range(len(shape)))]
    assert np.array_equal(data[from_array.frame_index(f)], expected)
    # A file's further axes are pinned by its prompts, not by the roles: unpinned, they are read whole.
    assert np.array_equal(data[from_file.frame_index(f)], np.take(data, f, axis=frame_axis))


def test_axis_letters_are_one_vocabulary():
    assert [axis_letter(label) for label in ("t", "Time", "channel", "C", "depth", "z", "slice")] == list("TTCCZZZ")
