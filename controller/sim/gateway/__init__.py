"""The PSRP gateway: a WSMan server over HTTPS (psrpcore) running the simulator's cmdlets for pypsrp."""
