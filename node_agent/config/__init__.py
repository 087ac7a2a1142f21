"""Config files: the on-disk store of what was applied, and the sync that puts a
service's files in place before its container starts."""
