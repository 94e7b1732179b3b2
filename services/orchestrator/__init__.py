"""The orchestrator service (``python -m services.orchestrator``); see ``service.py``."""
