"""The data every layer passes between them.

`snapshot` is what was observed plus the controller's memory, `statuses` Exchange's migration
statuses, `actions` the plan and its actions. Plain frozen data: no I/O, no behaviour beyond rendering.
"""
