"""``python -m tesla.cli``: the ``tesla-mcast`` console script."""

import sys

from tesla.cli.main import main

sys.exit(main())
