"""SAM2 models by name: the registry of checkpoints, downloading them safely, and loaded models kept for reuse."""
