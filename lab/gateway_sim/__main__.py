"""``python -m lab.gateway_sim``."""

import sys

from lab.gateway_sim.cli import main

sys.exit(main())
