"""``python -m mig_exporter`` runs the same entry point as the ``mig-exporter`` script."""

import sys

from mig_exporter.cli import main

sys.exit(main())
