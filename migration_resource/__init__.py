"""Deploy-time database migrations: an engine pure of AWS plus thin adapters around it."""
