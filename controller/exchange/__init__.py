"""Exchange Online: the seam (`runner.CmdletRunner`), the client over it, the pypsrp backend."""
