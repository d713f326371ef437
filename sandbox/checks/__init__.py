"""What the sandbox checks before it runs a plan: fields, policy signatures and standing, the guard again, keys,
lookups."""
