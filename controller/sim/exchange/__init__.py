"""Exchange Online in a file: the migration cmdlets as Microsoft documents them, with virtual time."""
