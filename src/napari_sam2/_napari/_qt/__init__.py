"""The Qt side of the napari glue: the dock widget and what runs off the GUI thread. Only this folder imports Qt."""
