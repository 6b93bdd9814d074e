"""Test support: servers and fixtures shared by the tests (BIND, the PSRP gateway, git repositories)."""
