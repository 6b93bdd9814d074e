"""`python -m controller` is `stagectl`."""

from controller.cli import main

raise SystemExit(main())
