"""`python -m controller` is `stagectl`."""

from controller.commands.cli import main

raise SystemExit(main())
