"""The fleet's MQTT topics (CONTRACTS §6), all under `storebox/<device.id>/`."""

from __future__ import annotations

from dataclasses import dataclass

#: Event kinds published on `events` (CONTRACTS §6); the box's other events stay local.
EVENT_KINDS = frozenset({
    "failover", "failback", "modem_reset", "offline_mode", "queue_drained",
    "declined_after_offline", "fault",
})

ONLINE = b"online"
OFFLINE = b"offline"


@dataclass(frozen=True)
class Topics:
    root: str

    @property
    def status(self) -> str:
        """Retained `online` (birth) / `offline` (Last Will, clean shutdown)."""
        return f"{self.root}/status"

    @property
    def state(self) -> str:
        """Retained status document (CONTRACTS §4)."""
        return f"{self.root}/state"

    @property
    def events(self) -> str:
        return f"{self.root}/events"

    @property
    def commands(self) -> str:
        """The subscription filter for every command."""
        return f"{self.root}/cmd/+"

    @property
    def command_result(self) -> str:
        return f"{self.root}/cmd_result"

    def command_name(self, topic: str) -> str | None:
        """`ping` for `storebox/<id>/cmd/ping`; None for anything else."""
        prefix = f"{self.root}/cmd/"
        if not topic.startswith(prefix):
            return None
        name = topic[len(prefix):]
        return name if name and "/" not in name else None


def topics_for(device_id: str) -> Topics:
    return Topics(f"storebox/{device_id}")
