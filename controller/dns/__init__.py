"""DNS: the seam (`base.DnsBackend`) and the RFC 2136 backend on dnspython (the simulator: controller.sim)."""
