"""Azure Functions blueprints: thin adapters from trigger objects to the plain handlers in shared.services."""
