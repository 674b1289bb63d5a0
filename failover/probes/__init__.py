"""End-to-end probes bound to one uplink interface.

Every socket a probe opens is bound to the uplink with ``SO_BINDTODEVICE``, so
a probe tests *that* uplink whatever today's default route is: the wired line
is watched while LTE carries traffic and vice versa.

What the route controller must guarantee
----------------------------------------
``SO_BINDTODEVICE`` restricts the socket to the device, it does not invent a
route: the kernel still looks the destination up (with the output interface
fixed) and fails with ``ENETUNREACH`` unless some table consulted for the flow
has a route through that device. So, for every uplink that is up (healthy or
being watched for recovery), not only the active one:

* keep a route to the probe targets through that uplink — normally its own
  default route, in the main table with a worse metric than the active
  uplink's (``default via GW_LTE dev wwan0 metric 200`` next to
  ``default via GW_WIRED dev eth0 metric 100``), or in a per-uplink table
  selected by ``ip rule add oif wwan0 lookup N`` (oif rules match bound
  sockets);
* fail over make-before-break: add the new active route before removing or
  demoting the old one, and never delete an uplink's route just because it is
  not active — only when the interface loses its address/gateway;
* keep reverse-path filtering loose on uplinks (``rp_filter`` 0 or 2):
  with strict mode (1) the answers to a probe on the non-default uplink fail
  the reverse-path check and are dropped, and that uplink looks dead;
* a probe target given by name needs a resolver reached over the same uplink:
  pass that uplink's DNS servers in ``ProbeOptions.dns_servers`` (configured) or
  ``ProbeOptions.resolvers`` (a callable read at every resolution: those the
  uplink learnt from DHCP or its modem, which change while the box runs). Without
  them names go through the system resolver, i.e. over the default route, and a
  dead active uplink would make the standby's name-based probes fail too.

Probes never raise for network failures: they return ``ProbeResult`` with
``ok=False`` and a short ``error``. Bad arguments raise ``ProbeConfigError``.

Loss tolerance: single-exchange probes (DNS, ICMP) retransmit after
``retry_after_s`` up to ``attempts`` times within the deadline; TCP and HTTP(S)
start a hedged second connection after ``retry_after_s`` (a lost SYN is
otherwise retransmitted by the kernel only after 1 s, past the deadline). An
answer that *is* an answer (refused, RCODE != 0, HTTP 503, bad certificate)
ends the probe at once as failed.

Byte accounting (IP-level bytes, what an LTE operator bills)
-----------------------------------------------------------
* UDP/DNS: each datagram counts payload + 8 (UDP) + 20/40 (IPv4/IPv6).
  An A query for ``gateway.example`` is 33 bytes → 61 sent, the answer
  49 bytes → 77 received: ~140 bytes per probe without loss.
* ICMP echo: 8 + ``icmp_payload`` (16) + 20 → 44 bytes each way.
* TCP (and HTTP/HTTPS over it): read from ``TCP_INFO`` when the socket is
  closed — segments in/out times (20/40 IP + 32 TCP with timestamps), +8 for
  SYN options, plus the payload bytes (retransmissions included) — plus an
  estimate of the close that happens after the snapshot (FIN/ACK: 2 segments
  each way). A TCP connect probe (SYN, ACK out; SYN-ACK in; then the close)
  is 216 + 164 = 380 bytes; a plain HTTP GET ~920 bytes; an HTTPS probe is
  dominated by the server's certificate chain (~3.3 KB with a one-certificate
  EC chain in the tests, 5-8 KB with a real RSA chain); keep HTTPS off the LTE
  standby target list.
* Kept HTTP(S) connections (``ProbeOptions.connections``, ``keep``): a probe counts
  what its connections moved since the previous probe of that target (``TCP_INFO``
  read live, ``KeptBytes``): the first one the handshake, the next ones their GET and
  response (~160 bytes out, ~230 in in the tests: one TLS record and segment each
  way, ACKs mostly delayed into the next probe). The close of a
  connection dropped with its uplink or at the engine's stop is not counted.
Link-layer framing is not counted. Totals are kept per interface in a
``ByteCounter`` (``default_counter()`` unless one is passed).

Modules
-------
``round`` (``probe``, ``probe_round`` and their results: the entry points),
``kinds`` (one probe per target kind), ``http`` (the HTTP(S) probe), ``keep``
(connections and addresses kept between probes), ``dns`` (the codec and the uplink's
resolver), ``sockets`` (bound sockets, TCP byte accounting), ``retry``
(retransmission and hedging), ``accounting`` (the byte figures above,
``ByteCounter``), ``options`` (``ProbeOptions``), ``failures`` (error texts).
"""
