"""buildfarm: a CI build farm (RQ queue in Redis, a pure scheduler core, ephemeral build containers)."""

__version__ = "0.1.0"
