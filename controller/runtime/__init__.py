"""The controller at run time, around the pure planner.

`source` and `serving` (the git revision served), `observe`, `applier`, `reconciler` (one pass),
`loop` (`stagectl run`), `store`, `audit`, `lock`, `drift`, `status`, `metrics`; `config` and
`backends` read the configuration and open the backends, `wiring` builds a reconciler from them.
"""
