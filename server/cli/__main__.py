"""``python -m server.cli``: the ``trackbridge`` command."""

import sys

from server.cli.main import main

sys.exit(main())
