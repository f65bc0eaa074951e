"""Deploy by replacement: environments, desired state, runtime drivers, strategies."""
