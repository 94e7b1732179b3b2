"""Print compose/.env: the secrets compose refuses to start without, generated, never committed.

``AOETL_POSTGRES_PASSWORD`` (the database's), ``AOETL_S3_ACCESS_KEY`` / ``AOETL_S3_SECRET_KEY`` (the object
store's identity and credential) and ``AOETL_S3_CREDENTIALS`` (the same pair as the services' s3
connection ``lake`` reads it: ``<access key>:<secret key>``)::

    python compose/generate_env.py > compose/.env
"""

from __future__ import annotations

import secrets


def env_lines() -> list[str]:
    access_key = "AKIA" + secrets.token_hex(8).upper()
    secret_key = secrets.token_urlsafe(30)
    return [
        f"AOETL_POSTGRES_PASSWORD={secrets.token_urlsafe(32)}",
        f"AOETL_S3_ACCESS_KEY={access_key}",
        f"AOETL_S3_SECRET_KEY={secret_key}",
        f"AOETL_S3_CREDENTIALS={access_key}:{secret_key}",
    ]


if __name__ == "__main__":
    print("\n".join(env_lines()))
