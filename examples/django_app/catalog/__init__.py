"""The example's one app: a model, a view that queries PostgreSQL, a template."""
