"""Readiness: batches planned from an on-premises inventory (`stagectl init`) and the runbook's rules checked
against a desired state (`stagectl lint`). Pure: files arrive as bytes, results leave as data and text."""
