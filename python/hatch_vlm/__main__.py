"""`python -m hatch_vlm ...` is the `hatch-vlm` command."""

import sys

from hatch_vlm.cli import main

if __name__ == "__main__":
    sys.exit(main())
