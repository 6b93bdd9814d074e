"""High availability and many tenants on etcd (issue 17, docs/ha.md): one leader per tenant through an etcd
lease, every write the leader makes fenced by a transaction on its leadership key, and the state a standby
resumes from (memory, open intents, drift baselines, the audit chain) kept in etcd.

The runtime knows nothing of etcd: it offers seams (the Store and AuditLog subclassed here, the
reconciler's `fence`, `loop.passes`) and this package fills them."""
