"""The ``aoetl`` command. A thin registry: each sub-command group lives in ``aoetl/commands/<name>.py`` and
is registered here with one line."""

from __future__ import annotations

import os

import typer

from aoetl.commands import agent, auth, definitions, dev, dlq, pipelines, webhooks
from shared.policy.settings import DATA_ROOTS_ENV, dev_data_roots_env

# The CLI is the developer's tool: unless the operator says otherwise, it reads and checks files under the
# development data roots (``shared.policy.settings``), as the services ``aoetl dev up`` starts do.
os.environ.setdefault(DATA_ROOTS_ENV, dev_data_roots_env())

app = typer.Typer(name="aoetl", help="Agent-Orchestrated ETL.", no_args_is_help=True)

app.add_typer(dev.app, name="dev")
app.add_typer(definitions.app, name="definitions")
app.add_typer(webhooks.app, name="webhook")
app.add_typer(dlq.app, name="dlq")
app.add_typer(auth.app, name="auth")
pipelines.register(app)
agent.register(app)


if __name__ == "__main__":
    app()
