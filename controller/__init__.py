"""stagectl: a GitOps controller for a staged Exchange 2003/2007 to Exchange Online migration."""

__version__ = "0.1.0"
