"""Arrays and prompts in, labels out: axis roles, frames for the model, prompts, tracking sessions.

No Qt, no napari, no file formats. Importing this package imports no torch (its modules that need torch do).
"""
