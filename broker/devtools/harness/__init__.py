"""The harness that tests, `handoff bench` and `handoff demo` share: a webhook receiver, a `handoff run`
subprocess, its config written as TOML, rabbitmqctl, ports and the one polling wait.

Production code (everything in broker/ but devtools/ and cli/) never imports it.
"""

from broker.devtools.harness.config import party, service_config, webhook_route, write_config
from broker.devtools.harness.ports import free_port, port_open
from broker.devtools.harness.rabbitmq import (
    RabbitmqctlError,
    rabbitmqctl,
    rabbitmqctl_path,
    rabbitmqctl_sync,
    throwaway_vhost,
    throwaway_vhost_sync,
)
from broker.devtools.harness.receiver import WebhookReceiver
from broker.devtools.harness.service import ServiceProcess, ServiceStartError
from broker.devtools.harness.waiting import ConditionTimeout, wait_for

__all__ = [
    "ConditionTimeout",
    "RabbitmqctlError",
    "ServiceProcess",
    "ServiceStartError",
    "WebhookReceiver",
    "free_port",
    "party",
    "port_open",
    "rabbitmqctl",
    "rabbitmqctl_path",
    "rabbitmqctl_sync",
    "service_config",
    "throwaway_vhost",
    "throwaway_vhost_sync",
    "wait_for",
    "webhook_route",
    "write_config",
]
