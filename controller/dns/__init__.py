"""DNS: the seam (`base.DnsBackend`), the RFC 2136 backend on dnspython and the simulator."""
