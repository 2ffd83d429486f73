"""The exchange simulator and the client library (docs/ARCHITECTURE.md §7).

- ``simulator.book`` / ``simulator.matching``: sans-IO order books and matching engine;
- ``simulator.config``: the simulator's config (members, latency model, fault plan);
- ``simulator.exchange``: the engine behind the native wire protocol on TCP (``fengkong sim exchange``);
- ``simulator.client``: the asyncio client library algo teams, the replayer and the tests use;
- ``simulator.replay``: order-flow replay from CSV / JSON lines (``fengkong sim replay``);
- ``simulator.scenarios`` / ``simulator.scenario_flows``: named, seeded flows with expected
  outcomes against the bare exchange or the risk gateway (``fengkong sim scenario``);
- ``simulator.cli``: argparse wiring for the ``fengkong sim ...`` commands.

The simulator depends on ``checks`` (model, enums, reason codes) and ``gateway.protocol`` (the
wire format) only, never on the gateway's internals.
"""
