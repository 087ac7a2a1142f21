"""One service's operations on this host: prepare, apply, restore, rollback, blue-green,
config reload; the journal and the outcome and service stores they keep."""
