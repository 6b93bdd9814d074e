"""The rehearsal tools: Exchange Online and DNS without a tenant. Production code never imports them.

`exchange` (the Exchange Online simulator and its store), `gateway` (the PSRP server that serves it
over WSMan/HTTPS), `dns` (the DNS simulator), `backends` (the sim backends for the command wiring),
`bind` and `pki` (a BIND 9 and a throwaway CA for the tests and the demo), `demo` (`make demo`).
"""
