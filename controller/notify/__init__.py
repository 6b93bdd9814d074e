"""Alert sinks: drift and failure alerts to a JSON webhook, Microsoft Teams or Slack, redacted."""
