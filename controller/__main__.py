"""``python -m schedsearch.controller``: run the operator (see ``controller.app``)."""

import sys

from schedsearch.controller.app import main

sys.exit(main())
