"""ExaBGP as this project's BGP speaker: configuration rendering, process supervision, bulk route sync.

`render` turns `Peer`s into ExaBGP configuration (pure, golden-file tested); `commands` turns route
changes into bulk API commands (pure); `engine.ExaBGPEngine` runs the `exabgp` child and keeps the
routers in line with the desired `RouteTable`. `relay` is the small helper ExaBGP itself runs to reach
the engine over a unix socket.
"""

from metallb_bgp.exabgp.engine import (
    EngineTuning,
    ExaBGPConfigError,
    ExaBGPEngine,
    ExaBGPError,
    PeerState,
    SessionState,
)
from metallb_bgp.exabgp.render import Neighbor, RenderedConfig, render, render_config

__all__ = [
    "EngineTuning",
    "ExaBGPConfigError",
    "ExaBGPEngine",
    "ExaBGPError",
    "Neighbor",
    "PeerState",
    "RenderedConfig",
    "SessionState",
    "render",
    "render_config",
]
