"""``python -m services.orchestrator``"""

from services.orchestrator.service import OrchestratorService
from shared.runtime import run_service

if __name__ == "__main__":
    raise SystemExit(run_service(OrchestratorService))
