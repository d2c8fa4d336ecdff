"""``python -m chainsight`` runs the command line."""

import sys

from chainsight.cli import main

sys.exit(main())
