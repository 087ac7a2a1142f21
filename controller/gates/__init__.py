"""Image trust before a rollout starts: vetting (digest pinning, registry allowlist),
the vulnerability scan gate and the Rego policy gate."""
