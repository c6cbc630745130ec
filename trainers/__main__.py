"""``python -m schedsearch.trainers``: the trainer-side commands.

``search`` runs a search in this process (see ``local``); ``pod`` is what a member pod started by
the controller runs (see ``pod``: it reads its orders from the environment, not the arguments).
"""

import sys

if sys.argv[1:2] == ["pod"]:
    from schedsearch.trainers import pod

    raise SystemExit(pod.main())

from schedsearch.trainers import local

raise SystemExit(local.main())
