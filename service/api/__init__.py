"""The HTTP layer: routes, schemas, problem+json errors, media negotiation."""
