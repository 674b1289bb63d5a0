"""`python -m hw.modem.simulator`: see `hw.modem.simulator.cli`."""

import sys

from hw.modem.simulator.cli import main

if __name__ == "__main__":
    sys.exit(main())
