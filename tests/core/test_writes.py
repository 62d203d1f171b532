"""The status objects the speakers write, as values (metallb_bgp.core.writes): pure, no API server."""

from __future__ import annotations


def test_service_bgp_statuses_name_each_service_and_node_and_say_per_peer_whether_it_is_out() -> None:
    """MetalLB's fields (node, service, the peers it is configured to go to) and ours: advertised only
    when every prefix of the service is acknowledged to that peer; two services sharing an IP each get
    their own object; names are the same after a restart."""
    from ipaddress import ip_network

    from metallb_bgp.core.keys import ServiceKey
    from metallb_bgp.core.routes.table import RouteAttributes, RouteTable
    from metallb_bgp.core.writes import service_bgp_status_name, service_bgp_statuses

    web, api = ServiceKey("default", "web"), ServiceKey("prod", "api")
    v4, v6 = ip_network("198.51.100.7/32"), ip_network("2001:db8::7/128")
    table = RouteTable(
        routes={(peer, prefix): RouteAttributes() for peer in ("r1", "r2") for prefix in (v4, v6)},
        services={v4: (web, api), v6: (web,)},
    )
    statuses = service_bgp_statuses("node-1", table, lambda key: key != ("r2", v6))
    assert set(statuses) == {service_bgp_status_name("node-1", "default", "web"), service_bgp_status_name("node-1", "prod", "api")}
    web_status = statuses[service_bgp_status_name("node-1", "default", "web")]
    assert web_status == {"node": "node-1", "serviceName": "web", "serviceNamespace": "default", "peers": ["r1", "r2"],
                          "peerStatus": [{"peer": "r1", "advertised": True}, {"peer": "r2", "advertised": False}]}  # fmt: skip
    assert statuses[service_bgp_status_name("node-1", "prod", "api")]["peerStatus"][1] == {"peer": "r2", "advertised": True}
    assert service_bgp_status_name("node-1", "default", "web") != service_bgp_status_name("node-2", "default", "web")
    assert service_bgp_status_name("node-1", "default", "web").startswith("bgp-")


def test_what_the_router_reports_is_true_only_when_it_is_true_of_every_prefix() -> None:
    """With a BMP station: per peer, `routerReceived` / `routerAccepted` true when the router says so of
    every prefix of the service, false as soon as one is not, absent while the router says nothing."""
    from ipaddress import ip_network

    from metallb_bgp.core.keys import ServiceKey
    from metallb_bgp.core.routes.table import RouteAttributes, RouteTable
    from metallb_bgp.core.writes import service_bgp_status_name, service_bgp_statuses

    web = ServiceKey("default", "web")
    v4, v6 = ip_network("198.51.100.7/32"), ip_network("2001:db8::7/128")
    table = RouteTable(routes={(peer, prefix): RouteAttributes() for peer in ("r1", "r2", "r3") for prefix in (v4, v6)},
                       services={v4: (web,), v6: (web,)})  # fmt: skip
    reports = {
        ("r1", v4): {"received": True, "accepted": True}, ("r1", v6): {"received": True, "accepted": True},
        ("r2", v4): {"received": True, "accepted": True}, ("r2", v6): {"received": True, "accepted": False},
        ("r3", v4): {"received": True, "accepted": None},  # r3 reports no post-policy; nothing of v6 yet
    }  # fmt: skip
    status = service_bgp_statuses("node-1", table, lambda key: True, reports.get)[service_bgp_status_name("node-1", "default", "web")]
    assert status["peerStatus"] == [
        {"peer": "r1", "advertised": True, "routerReceived": True, "routerAccepted": True},
        {"peer": "r2", "advertised": True, "routerReceived": True, "routerAccepted": False},
        {"peer": "r3", "advertised": True},
    ]


def test_bgp_session_states_have_frr_k8s_fields_and_ours_one_per_node_and_peer() -> None:
    from metallb_bgp.core.writes import BGP_SESSION_STATE, SessionView, bgp_session_state_name, bgp_session_states

    states = bgp_session_states("node-1", [
        SessionView("tor-a", "192.0.2.1", "established", since="2026-12-04T10:00:00Z", bfd="up", prefixes_sent=3),
        SessionView("tor-b", "192.0.2.2", "idle", last_error="notification receive code 6 subcode 2"),
    ])  # fmt: skip
    a, b = states[bgp_session_state_name("node-1", "tor-a")], states[bgp_session_state_name("node-1", "tor-b")]
    assert a == {"bgpStatus": "Established", "bfdStatus": "Up", "node": "node-1", "peer": "192.0.2.1", "vrf": "",
                 "peerName": "tor-a", "prefixesSent": 3, "since": "2026-12-04T10:00:00Z"}  # fmt: skip
    assert (b["bgpStatus"], b["bfdStatus"], b["lastError"]) == ("Idle", "", "notification receive code 6 subcode 2")
    assert BGP_SESSION_STATE.labels(a) == {"metallb-bgp.io/node": "node-1", "metallb-bgp.io/peer": "tor-a"}
    assert bgp_session_state_name("node-1", "tor-a") != bgp_session_state_name("node-2", "tor-a")
