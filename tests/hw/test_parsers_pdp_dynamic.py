"""`+CGCONTRDP` (3GPP TS 27.007 §10.1.23): the PDP context's dynamic parameters, the LTE
data call's resolvers among them.

The table is ModemManager's `cgcontrdp_response_tests` (src/tests/test-modem-helpers.c,
the cases of `mm_3gpp_parse_cgcontrdp_response`: TIM Italy's answers in the post- and
pre-v9.4.0 layouts, an IPv6-only context with 16-octet addresses, T-Mobile US on a
Quectel EG915Q, colon notation after +CGPIAF), every expectation as ModemManager's."""

from __future__ import annotations

import pytest

from hw.modem.errors import ParseError
from hw.modem.parsers.pdp import PdpDynamicParams, context_dns, parse_cgcontrdp

MM = "ModemManager src/tests/test-modem-helpers.c cgcontrdp_response_tests"
TIM = "ibox.tim.it.mnc001.mcc222.gprs"
TMO = "fast.t-mobile.com"


def params(cid: int, bearer_id: int, apn: str | None, local: str | None = None,
           subnet: str | None = None, gateway: str | None = None, dns1: str | None = None,
           dns2: str | None = None) -> PdpDynamicParams:
    return PdpDynamicParams(cid, bearer_id, apn, local, subnet, gateway, dns1, dns2)


#: TIM Italy's answer after the APN: address, mask, gateway, primary and secondary DNS.
TIM_VALUES = ("2.197.17.49", "255.255.255.255", "2.197.17.49", "10.207.43.46", "10.206.56.132")
#: What ModemManager's "every field" cases add after the secondary DNS in each layout.
TIM_TAILS = {"post-v9.4.0": ',"0.0.0.0","0.0.0.0",0', "pre-v9.4.0": ',"0.0.0.0","0.0.0.0"'}


def tim(layout: str, kept: int) -> tuple[str, PdpDynamicParams]:
    """TIM Italy's answer up to its `kept`-th value in `layout` (ModemManager's TIM cases
    are these prefixes): post-v9.4.0 joins address and mask in one dotted field, pre-v9.4.0
    gives the mask its own; the whole answer ends in `TIM_TAILS`."""
    values = TIM_VALUES[:kept]
    fields = [".".join(values[:2]), *values[2:]] if layout == "post-v9.4.0" else list(values)
    tail = TIM_TAILS[layout] if kept == len(TIM_VALUES) else ""
    text = f'+CGCONTRDP: 4,5,"{TIM}",' + ",".join(f'"{v}"' for v in fields) + tail
    return text, params(4, 5, TIM, *values)


@pytest.mark.parametrize(("source", "text", "expected"), [
    *((f"{MM}: {layout}, {what}", *tim(layout, kept))
      for layout, cases in (
          ("post-v9.4.0", ((5, "every field"), (4, "primary DNS only"),
                           (3, "up to the gateway"), (2, "address and mask only"))),
          ("pre-v9.4.0", ((5, "every field (mask in its own field)"), (4, "primary DNS only"),
                          (3, "up to the gateway"), (2, "address and mask"),
                          (1, "address only"))))
      for kept, what in cases),
    (f"{MM}: IPv6 in 16 dotted octets, empty gateway",
     '+CGCONTRDP: 1,5,"internetipv6.mnc003.mcc260.gprs",'
     '"254.128.0.0.0.0.0.0.0.0.0.37.88.136.248.1","",'
     '"42.1.23.0.0.2.255.255.0.0.0.0.0.0.159.1","42.1.23.0.0.3.255.255.0.0.0.0.0.0.152.34",'
     '"","",0,0',
     params(1, 5, "internetipv6.mnc003.mcc260.gprs", "fe80::25:5888:f801",
            dns1="2a01:1700:2:ffff::9f01", dns2="2a01:1700:3:ffff::9822")),
    (f"{MM}: Quectel EG915Q, unquoted empty gateway",
     f'+CGCONTRDP: 2,6,"{TMO}","38.7.251.144.154.37.192.120.172.57.189.17.176.171.138.245",,'
     '"253.0.151.106.0.0.0.0.0.0.0.0.0.0.0.9","253.0.151.106.0.0.0.0.0.0.0.0.0.0.0.16"',
     params(2, 6, TMO, "2607:fb90:9a25:c078:ac39:bd11:b0ab:8af5",
            dns1="fd00:976a::9", dns2="fd00:976a::10")),
    (f"{MM}: colon notation (+CGPIAF)",
     f'+CGCONTRDP: 1,0,"{TMO}","2607:FB90:B59A:02C1:0AD3:1B57:4FD4:21F4",'
     '"FE80:0000:0000:0000:B46D:57FF:FE45:4545","fd00:976a::9","fd00:976a::10"',
     params(1, 0, TMO, "2607:fb90:b59a:2c1:ad3:1b57:4fd4:21f4",
            gateway="fe80::b46d:57ff:fe45:4545", dns1="fd00:976a::9", dns2="fd00:976a::10")),
    (f"{MM}: no local address, no gateway",
     f'+CGCONTRDP: 2,6,"{TMO}",,,"253.0.151.106.0.0.0.0.0.0.0.0.0.0.0.9",'
     '"253.0.151.106.0.0.0.0.0.0.0.0.0.0.0.16"',
     params(2, 6, TMO, dns1="fd00:976a::9", dns2="fd00:976a::10")),
    (f"{MM}: the mandatory fields only", f'+CGCONTRDP: 4,5,"{TIM}"', params(4, 5, TIM)),
    (f"{MM}: an empty APN", '+CGCONTRDP: 4,5,""', params(4, 5, None)),
])
def test_cgcontrdp_table(source: str, text: str, expected: PdpDynamicParams) -> None:
    assert parse_cgcontrdp(text) == (expected,), source


def test_the_dns_leaves_out_unspecified_resolvers() -> None:
    (line,) = parse_cgcontrdp('+CGCONTRDP: 1,5,"internet","10.0.0.2.255.255.255.0",'
                              '"10.0.0.1","0.0.0.0","0.0.0.0"')
    assert (line.dns_primary, line.dns) == ("0.0.0.0", ())
    (line,) = parse_cgcontrdp("+CGCONTRDP: 1,5,internet,10.0.0.2.255.255.255.0,10.0.0.1,"
                              "10.0.0.53")  # unquoted, one resolver
    assert line.dns == ("10.0.0.53",)


def test_an_ipv4v6_context_gives_a_line_per_family_and_its_resolvers_in_order() -> None:
    text = ('+CGCONTRDP: 1,5,"internet","10.0.0.2.255.255.255.0","10.0.0.1","10.0.0.53",'
            '"10.0.0.54"\r\n'
            '+CGCONTRDP: 1,5,"internet","32.1.13.184.0.0.0.0.0.0.0.0.0.0.0.2","",'
            '"32.1.13.184.0.0.0.0.0.0.0.0.0.0.0.53","10.0.0.53"\r\n'
            '+CGCONTRDP: 2,6,"ims","10.9.0.2.255.255.255.0","10.9.0.1","10.9.0.53"\r\n')
    found = parse_cgcontrdp(text)
    assert [p.cid for p in found] == [1, 1, 2]
    assert context_dns(found, 1) == ("10.0.0.53", "10.0.0.54", "2001:db8::35")
    assert context_dns(found, 2) == ("10.9.0.53",)
    assert context_dns(found, 3) == () and parse_cgcontrdp("") == ()


@pytest.mark.parametrize("text", [
    "+CGCONTRDP: 1,5",                                     # no APN field
    '+CGCONTRDP: x,5,"internet"',                          # cid not a number
    '+CGCONTRDP: 1,5,"internet","10.0.0.2.255.255"',        # 6 octets
    '+CGCONTRDP: 1,5,"internet","10.0.0.2.255.255.255.0","10.0.0.1","not-an-ip"',
    '+CGCONTRDP: 1,5,"internet","1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.999"',
])
def test_cgcontrdp_malformed(text: str) -> None:
    with pytest.raises(ParseError) as err:
        parse_cgcontrdp(text)
    assert repr(text) in str(err.value)
