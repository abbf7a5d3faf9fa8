"""Settings, metrics, errors, security and logging shared by the service's routes."""
