"""One module per `stagectl` command."""
