"""The desired state: the migration repository's documents as pydantic models (`models`), loaded from
YAML and CSV safely (`loader`, through `yamlsafe`, `documents`, `kinds`, `csvmembers`, `records` and
`consistency`) with every problem at its file:line:column (`problems`).
"""
