"""A small Django project for tests/test_integrations_django.py (settings, URLs, views, a model)."""
