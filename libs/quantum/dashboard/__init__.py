"""The operator's dashboard: REST and WebSocket API over the journal and the live state, the
web page it serves, and fleet-wide Prometheus gauges. The service shell is
``services/dashboard_api``."""
