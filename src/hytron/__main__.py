"""`python -m hytron` runs the command line."""

import sys

from hytron.cli import main

sys.exit(main())
