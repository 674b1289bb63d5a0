"""The box's configuration for the drill: the shop's interfaces, the gateway simulator and
the fleet broker on the internet, the modem simulator, mock LEDs, and the POS API on the
LAN address."""

from __future__ import annotations

from pathlib import Path

from firmware.config.schema import (
    ApiConfig,
    Config,
    DeviceConfig,
    FleetConfig,
    HwConfig,
    LteConfig,
    PaymentsConfig,
    ProbesConfig,
    RoutingConfig,
    SteerConfig,
    WiredConfig,
)
from lab.box import write_secret
from lab.fleet import BROKER_IP, BROKER_PORT
from lab.shop import GATEWAY_IP, LAN_BOX, OTHER_IP, PORT

GATEWAY_PORT = 9443
API_PORT = 8470
DEVICE_ID = "store-drill"


def drill_config(workdir: Path, *, merchant_key: str, token: str, lte_carrier: str,
                 failback_after_s: float, unsteer_after_s: float = 30.0,
                 seal_key_file: Path | None = None) -> Config:
    """The drill's box, its secrets written in `workdir` (0600) and its state there. With
    `seal_key_file` (the gateway's *public* key) the box seals every card it keeps for an
    offline payment. `[steer]` keeps the product's thresholds (docs/config.md) but
    `unsteer_after_s`, so that `--short` need not wait 30 s for the brownout's unsteer."""
    (workdir / "state").mkdir(mode=0o700, exist_ok=True)
    tokens = write_secret(workdir / "pos-tokens", token)
    key_file = write_secret(workdir / "merchant-key", merchant_key)
    gateway = f"http://{GATEWAY_IP}:{GATEWAY_PORT}"
    return Config(
        device=DeviceConfig(id=DEVICE_ID, state_dir=str(workdir / "state")),
        wired=WiredConfig(interface="wan0", carrier="KT"),
        lte=LteConfig(interface="wwan0", simulator=lte_carrier),  # type: ignore[arg-type]  # the CLI's choices
        routing=RoutingConfig(backend="netlink", failover=True,
                              failback_after_s=failback_after_s, lan_interfaces=["lan0"]),
        probes=ProbesConfig(targets=[f"{gateway}/health", f"tcp:{OTHER_IP}:{PORT}",
                                     f"icmp:{GATEWAY_IP}"]),
        payments=PaymentsConfig(
            gateway_url=gateway,
            allow_insecure_gateway=True,  # the simulator speaks plain HTTP
            lost_attempt_lifetime_s=10.0,  # no load balancer between the box and the simulator
            merchant_key_file=str(key_file),
            seal_key_file="" if seal_key_file is None else str(seal_key_file)),
        api=ApiConfig(listen=f"{LAN_BOX}:{API_PORT}", tokens_file=str(tokens),
                      admin_socket=str(workdir / "api.sock")),
        steer=SteerConfig(unsteer_after_s=unsteer_after_s),
        hw=HwConfig(pin_factory="mock"),
        fleet=FleetConfig(mqtt_url=f"mqtt://{BROKER_IP}:{BROKER_PORT}", keepalive_s=5,
                          reconnect_max_s=2.0),
    )

