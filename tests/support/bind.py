"""The DNS tests' BIND: the same launcher `make demo` uses, kept in the package (controller/sim/bind.py)."""

from controller.sim.bind import (  # noqa: F401 - re-exported for the tests
    KEY_NAME,
    READONLY_KEY_NAME,
    ZONE,
    ZONE_TEXT,
    BindZone,
    Named,
    bind_zone,
    free_port,
    named_binary,
    new_secret,
    wait_until_serving,
)
