"""The fengkong gateway service: wire protocol, sessions, exchange link, routing, admin plane."""
