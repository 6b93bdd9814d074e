"""The desired state: the migration repository's documents as pydantic models (`models`), loaded
from YAML and CSV safely (`loader`, `yamlsafe`, `csvmembers`, `records`) with file:line:column problems.
"""
