"""``python -m gateway.cli``: the same as the ``sensegate`` command."""

import sys

from gateway.cli.app import main

sys.exit(main())
