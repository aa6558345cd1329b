"""``python -m propstream``: the same command line as the ``propstream`` script."""

import sys

from propstream.cli import main

if __name__ == "__main__":
    sys.exit(main())
