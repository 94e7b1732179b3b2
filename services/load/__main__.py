"""``python -m services.load``"""

from services.load.service import LoadService
from shared.runtime import run_service

if __name__ == "__main__":
    raise SystemExit(run_service(LoadService))
