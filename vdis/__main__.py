"""python -m vdis: the same as the `vdis` command."""

import sys

from vdis.cli import main

sys.exit(main())
