"""The fleet operator's server (docs/cli.md): `storebox fleet serve --config PATH`.

It is the operator's product, not the box's: it imports the contract's names from
`firmware.fleet.topics`, the recorded migrations (`firmware.ledger.migrate`) and the
package's exception root (`firmware.errors`) and nothing else of the box, and the box
never imports it.

- `config`: the `[fleet_server]` TOML;
- `model`: presence, states, events de-duplicated by seq, and incidents (pure logic, the
  clock passed in: testable without a broker);
- `db`: SQLite persistence, written in batches;
- `server`: the MQTT ingest (aiomqtt: `status`, `state`, `events`), the JSON API and the
  one-page dashboard (`dashboard.html`);
- `stream`: the server-sent events of `/api/stream`, one frame per change for every viewer;
- `shop_api`: one shop's page and timeline, an incident's claim report (its routes);
- `records`: what the database remembers of a shop (timeline, outage-ledger rows);
- `claim`: the claim report from an incident and its shops' outage rows (pure).
"""
