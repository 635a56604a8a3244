"""Files in and out: TIFF stacks and label images, prompt files, the synthetic samples. No torch."""
