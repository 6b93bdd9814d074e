"""Migration batches, one decision each: its lifecycle, its members, its settings, its failed users. Pure."""
