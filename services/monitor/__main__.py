"""``python -m services.monitor``"""

from services.monitor.service import MonitorService
from shared.runtime import run_service

if __name__ == "__main__":
    raise SystemExit(run_service(MonitorService))
