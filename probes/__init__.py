"""obsweb probe worker: the per-host agent. It must not import Django."""

AGENT_VERSION = "0.1.0"
