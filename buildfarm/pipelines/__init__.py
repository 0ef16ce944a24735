"""Pipelines: DAGs of builds from YAML files (model), run by the engine, started on schedule by
the ticker, advanced by the daemon thread, driven by `buildfarm pipeline` and the API."""
