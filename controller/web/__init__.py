"""The read-only migration page and its JSON, served from the state directory (docs/web.md)."""
