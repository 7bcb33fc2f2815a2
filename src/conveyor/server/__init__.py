"""The Conveyor API server: `create_app(settings)`."""
