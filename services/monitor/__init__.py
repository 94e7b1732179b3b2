"""The monitor service (``python -m services.monitor``); see ``service.py``."""
