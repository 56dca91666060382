"""``python -m pvdetect``: the same as the ``pvdetect`` command."""

import sys

from pvdetect.cli import main

if __name__ == "__main__":
    sys.exit(main())
