"""The Django project of examples/django_app (settings, URLs, the ASGI and WSGI entry points)."""
