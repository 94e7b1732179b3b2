"""The extract service (``python -m services.extract``); see ``service.py``."""
