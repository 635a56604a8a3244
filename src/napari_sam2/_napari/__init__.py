"""napari glue for napari-sam2: reader, sample data and (later) widgets."""
