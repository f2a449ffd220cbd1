"""Celery glue: the app (``workers.app``) and the tasks (``workers.tasks``) calling ``service``."""
