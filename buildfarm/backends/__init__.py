"""Backends turn capacity into offers and launch builds: `local` (this host's Docker engine,
or plain processes) and `mesos` (a pymesos framework)."""
