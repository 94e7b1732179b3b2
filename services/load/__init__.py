"""The load service (``python -m services.load``); see ``service.py``."""
