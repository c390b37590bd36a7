"""`python -m acquisition.cli`: the `crf` command without its console script."""

import sys

from acquisition.cli.main import main

sys.exit(main())
