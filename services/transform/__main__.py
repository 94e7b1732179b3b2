"""``python -m services.transform``"""

from services.transform.service import TransformService
from shared.runtime import run_service

if __name__ == "__main__":
    raise SystemExit(run_service(TransformService))
