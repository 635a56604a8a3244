"""`python -m napari_sam2` runs the `napari-sam2` command line."""

import sys

from .cli.commands import main

sys.exit(main())
