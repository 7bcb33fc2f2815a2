"""``python -m conveyor``: the command line."""

from conveyor._entry import main

raise SystemExit(main())
