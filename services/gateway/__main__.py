"""``python -m services.gateway``"""

from services.gateway.service import GatewayService
from shared.runtime import run_service

if __name__ == "__main__":
    raise SystemExit(run_service(GatewayService))
