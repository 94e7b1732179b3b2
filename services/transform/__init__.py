"""The transform service (``python -m services.transform``); see ``service.py``."""
