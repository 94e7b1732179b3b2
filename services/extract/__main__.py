"""``python -m services.extract``"""

from services.extract.service import ExtractService
from shared.runtime import run_service

if __name__ == "__main__":
    raise SystemExit(run_service(ExtractService))
