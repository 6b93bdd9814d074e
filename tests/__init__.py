"""stagectl tests."""
