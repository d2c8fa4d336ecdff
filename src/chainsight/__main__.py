"""``python -m chainsight`` runs the command line."""

import sys

from chainsight.tools.cli import main

sys.exit(main())
