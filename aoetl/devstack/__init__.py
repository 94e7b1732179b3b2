"""The local stack (Kafka + PostgreSQL without Docker) and the service supervisor.

Public entry points: :class:`DevStack` (``up``/``down``/``status``), :func:`running_stack` (tests),
:class:`ServiceSupervisor` (service replicas as subprocesses).
"""

from aoetl.devstack.backend import Backend, choose_backend, running_stack
from aoetl.devstack.processes import SERVICE_NAMES, ServiceProcess, ServiceSupervisor
from aoetl.devstack.stack import ComponentStatus, DevStack, StackEndpoints

__all__ = [
    "SERVICE_NAMES",
    "Backend",
    "ComponentStatus",
    "DevStack",
    "ServiceProcess",
    "ServiceSupervisor",
    "StackEndpoints",
    "choose_backend",
    "running_stack",
]
